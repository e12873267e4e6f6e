"""`metaemb lookup KEY...`: embeddings read back through Feast's get_online_features."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--show", type=int, default=6, help="embedding values to print (default 6)")


def run(args, cfg) -> int:
    from serving.feast_repo import lookup, lookup_line

    keys = list(cfg.data.task_key)
    rows = [dict(zip(keys, k.split(","))) for k in args.keys]
    if any(len(r) != len(keys) for r in rows):
        raise SystemExit(f"each key must give {len(keys)} comma-separated value(s) for {keys}")
    df = lookup(cfg, rows)
    for _, row in df.iterrows():
        print(lookup_line(row, keys, args.show), flush=True)
    return 0
