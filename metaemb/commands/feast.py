"""`metaemb feast render | apply` (and `metaemb apply`): the Feast repo of this config."""

from __future__ import annotations

import argparse
from pathlib import Path

APPLY_HELP = "register entities, source, feature view and service; create the online table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="feast_command", required=True, metavar="FEAST_COMMAND")
    r = sub.add_parser("render", help="print (or write) feature_repo/feature_store.yaml for this config, for the feast CLI")
    r.add_argument("--out", help="file to write (default: stdout)")
    sub.add_parser("apply", help=APPLY_HELP)


def run(args, cfg) -> int:
    if args.feast_command == "render":
        return render(cfg, args.out)
    return apply(cfg)


def render(cfg, out: str | None) -> int:
    from serving.feast_repo import render_yaml, repo_dir

    # Paths in the file are relative to the feature repo only when it is written there.
    relative = out is None or Path(out).resolve().parent == repo_dir(cfg)
    text = render_yaml(cfg, relative=relative)
    if out:
        Path(out).write_text(text)
    else:
        print(text, end="")
    return 0


def apply(cfg) -> int:
    """The service is pointed at the view the last publish switched readers to (it stays where it
    is before any publish)."""
    from serving import feast_repo, publish_log, slots

    store = feast_repo.feature_store(cfg)
    feast_repo.apply(cfg, store, served=publish_log.last_view(cfg))
    print(f"feast apply: project {cfg.feast.project}, online store {cfg.feast.online_store}, readers see "
          f"{slots.served_view(store)}", flush=True)
    return 0
