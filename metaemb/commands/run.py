"""`metaemb run --date D`: one daily run, the stage code the Airflow DAG runs."""

from __future__ import annotations

import argparse
import datetime as dt

from core import stages
from metaemb.commands.options import add_inputs, date, inputs, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (f"Stages: {' -> '.join(stages.DAILY)}; each replaces exactly its date's partition, so reruns "
                     "are idempotent.")
    p.add_argument("--date", type=date, required=True, help="run date YYYY-MM-DD (the logical date)")
    p.add_argument("--to-date", type=date, help="run every date from --date to this one, in order")
    p.add_argument("--stages", help="comma-separated subset of stages (default: all)")
    p.add_argument("--model-version", help="checkpoint version (default: the latest trained)")
    p.add_argument("--allow-empty-day", action="store_true", help="do not fail when the date has no events")
    add_inputs(p)


def run(args, cfg) -> int:
    from metaemb.daily import run_daily
    from pipelines import lake
    from pipelines.spark import get_spark

    chosen = tuple(args.stages.split(",")) if args.stages else stages.DAILY
    unknown = [s for s in chosen if s not in stages.DAILY]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; stages: {', '.join(stages.DAILY)}")
    run_inputs = inputs(args, cfg)  # schema faults stop here, before Spark starts
    lake.check_storage(cfg)
    spark = get_spark(cfg)
    for day in dates(args.date, args.to_date):
        run_daily(spark, cfg, day, run_inputs, stages=chosen, model_version=args.model_version,
                  allow_empty_day=args.allow_empty_day, progress=say)
    return 0


def dates(first: dt.date, last: dt.date | None) -> list[dt.date]:
    days = ((last or first) - first).days
    if days < 0:
        raise SystemExit("--to-date is before --date")
    return [first + dt.timedelta(days=i) for i in range(days + 1)]
