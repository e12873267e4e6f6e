"""`metaemb status`: per date, the stages completed, rows, model, gate figures; exit 1 when stale."""

from __future__ import annotations

import argparse

from metaemb.commands.options import date, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--expect-date", type=date, help="the latest date that should be published (default: yesterday)")
    p.add_argument("--plot", metavar="PNG", help="also write a rows + drift plot per date")


def run(args, cfg) -> int:
    from metaemb.status import status

    return status(cfg, as_json=args.json, expect_date=args.expect_date, plot_path=args.plot, progress=say)
