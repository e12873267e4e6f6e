"""`metaemb feast render | apply`: the Feast helpers (serving.feast_store) from the config."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="feast_command", required=True, metavar="FEAST_COMMAND")
    r = sub.add_parser("render", help="print (or write) feature_repo/feature_store.yaml for this config, for the feast CLI")
    r.add_argument("--out", help="file to write (default: stdout)")
    sub.add_parser("apply", help="register entities, source, feature view and service; create the online table")


def run(args, cfg) -> int:
    from serving.feast_store import apply, render_yaml, repo_dir

    if args.feast_command == "render":
        # Paths in the file are relative to the feature repo only when it is written there.
        relative = args.out is None or Path(args.out).resolve().parent == repo_dir(cfg)
        text = render_yaml(cfg, relative=relative)
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text, end="")
        return 0
    apply(cfg)
    print(f"feast apply: project {cfg.feast.project}, online store {cfg.feast.online_store}", flush=True)
    return 0
