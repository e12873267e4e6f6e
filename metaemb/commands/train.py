"""`metaemb train --date D`: Algorithm 2a on the window ending D -> a checkpoint and its serving artifact."""

from __future__ import annotations

import argparse

from core.config import shown
from metaemb.commands.options import add_inputs, date, inputs, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Builds labeled_interactions and task_samples for --date, trains [train] mode, writes a "
                     "checkpoint whose content hash is the model version.")
    p.add_argument("--date", type=date, required=True)
    p.add_argument("--skip-prepare", action="store_true", help="task_samples for --date already exist")
    add_inputs(p)


def run(args, cfg) -> int:
    from metaemb.daily import train_on
    from pipelines import lake
    from pipelines import train as train_job
    from pipelines.spark import get_spark

    run_inputs = inputs(args, cfg)
    lake.check_storage(cfg)
    spark = get_spark(cfg)
    if args.skip_prepare:
        result = train_job.run(spark, cfg, args.date, run_inputs, progress=say)
    else:
        result = train_on(spark, cfg, args.date, run_inputs, progress=say)
    say(f"trained {cfg.train.mode} on {result['tasks']:,} tasks in {result['seconds']:.1f}s -> model version "
        f"{result['model_version']} ({shown(result['checkpoint'])})")
    return 0
