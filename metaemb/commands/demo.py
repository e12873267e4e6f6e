"""`metaemb demo`: the whole daily flow on the embedded defaults, then lookups and scores."""

from __future__ import annotations

import argparse

from metaemb.commands.options import say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("End to end on the embedded defaults: synthetic data -> train -> daily runs -> Feast online "
                     "store -> lookups, scores and a summary.")
    p.add_argument("--users", type=int, default=3000, help="synthetic tasks (users) (default 3000)")
    p.add_argument("--days", type=int, default=30, help="days of synthetic history (default 30)")
    p.add_argument("--daily-runs", type=int, default=3, help="daily runs over the last dates (default 3)")
    p.add_argument("--fresh", action="store_true", help="delete var/ state of earlier demos first")


def run(args, cfg) -> int:
    from metaemb.demo import demo

    return demo(cfg, users=args.users, days=args.days, daily_runs=args.daily_runs, fresh=args.fresh, progress=say)
