"""`metaemb validate`: the input files against the data contract, without Spark."""

from __future__ import annotations

import argparse
import sys

from metaemb.commands.options import add_inputs, date, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Exit 0 when usable (row faults are listed with counts: a run quarantines them); exit 2 "
                     "with one line per problem when not.")
    add_inputs(p)
    p.add_argument("--date", type=date, help="check the rows the run for this date checks: the event dates of "
                                             "its window (later rows are a later run's); default: every row, "
                                             "'future' meaning after today (UTC)")
    p.add_argument("--window-days", type=int, help="the window with --date (default: [pipeline] window_days)")


def run(args, cfg) -> int:
    from pipelines.contract import validate_inputs

    inter = cfg.location(args.interactions or cfg.data.interactions)
    # The config's feature file goes with the config's interactions, not with a file named here.
    feats_value = args.features if args.features is not None else \
        ("" if args.interactions else cfg.data.entity_features)
    reports = validate_inputs(cfg, inter, cfg.location(feats_value) if feats_value else None,
                              run_date=args.date, window_days=args.window_days)
    ok = True
    for r in reports:
        for line in r.lines():
            print(line, file=sys.stdout if r.ok else sys.stderr)
        ok &= r.ok
        if r.ok:
            used = "; ".join(f"{k}: {', '.join(v) or '(none)'}" for k, v in r.used_columns.items())
            say(f"{r.path}: OK" + (f", {r.rows:,} rows" if r.rows else "") + (f" ({used})" if used else ""))
    return 0 if ok else 2
