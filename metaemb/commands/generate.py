"""`metaemb generate --out DIR`: a synthetic data set with planted per-task preferences."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from metaemb.commands.options import date, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Writes OUT/interactions.parquet and OUT/entity_features.parquet."
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--end-date", type=date, default=dt.date(2026, 10, 30), help="last day with events")
    p.add_argument("--events-per-user", type=float, default=30.0, help="mean interactions per user")
    p.add_argument("--snapshot-every", type=int, default=1, help="days between entity feature snapshots")
    p.add_argument("--seed", type=int, default=0)


def run(args, cfg) -> int:
    from metaemb.datasets.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(users=args.users, items=args.items, days=args.days, end_date=args.end_date,
                         mean_events_per_user=args.events_per_user, seed=args.seed,
                         snapshot_every_days=args.snapshot_every)
    t = time.perf_counter()
    counts = generate(args.out, spec, progress=say)
    say(f"wrote {args.out}/interactions.parquet ({counts['interactions']:,} rows) and "
        f"{args.out}/entity_features.parquet ({counts['entity_features']:,} rows): {counts['users']:,} users, "
        f"{counts['first_date']} .. {counts['last_date']} in {time.perf_counter() - t:.1f}s")
    return 0
