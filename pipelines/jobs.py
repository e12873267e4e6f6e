"""spark-submit application: one stage of the daily job for one date.

    spark-submit pipelines/jobs.py --stage embed --date 2026-10-30 [--config metaemb.toml]
    spark-submit pipelines/jobs.py --stage train --date 2026-10-27   (the retrain DAG)
    python pipelines/jobs.py --stage publish --date 2026-10-30        (publish and check start no JVM)

Airflow's SparkSubmitOperator launches this file; `metaemb run` calls the same
metaemb.daily.run_stage in-process. Like the CLI it is an entry point, not a Spark job:
it runs every stage, publish and check included, so it may use any layer. It lives here
because this path is what the DAG tasks submit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

# spark-submit runs this file as a script: make the project importable without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config as config_mod  # noqa: E402
from metaemb.daily import STAGES, TRAIN, describe, run_stage  # noqa: E402
from pipelines.labeled import resolve_inputs  # noqa: E402
from pipelines.lake import check_storage  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402
from metaemb.airflow_dags import EXIT_NO_RETRY  # noqa: E402
from models.checkpoint import CheckpointError  # noqa: E402
from pipelines.contract import InputError  # noqa: E402
from pipelines.embed import ModelMismatchError  # noqa: E402
from pipelines.labeled import EmptyDayError  # noqa: E402
from serving import stages as serving_stages  # noqa: E402

# Failures a retry cannot mend: the same input gives the same error.
DATA_ERRORS = (InputError, EmptyDayError, CheckpointError, ModelMismatchError, *serving_stages.DATA_ERRORS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=(*STAGES, TRAIN))
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="run date (logical date)")
    parser.add_argument("--config", help="TOML config (default: $METAEMB_CONFIG / ./metaemb.toml / defaults)")
    parser.add_argument("--model-version")
    parser.add_argument("--allow-empty-day", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_mod.load(args.config)
    try:
        if args.stage in serving_stages.STAGES:  # no JVM for these
            result = serving_stages.run(cfg, args.stage, args.date)
        else:
            inputs = resolve_inputs(cfg)
            check_storage(cfg)
            spark = get_spark(cfg, app_name=f"metaemb-{args.stage}-{args.date}")
            result = run_stage(spark, cfg, args.stage, args.date, inputs, model_version=args.model_version,
                               allow_empty_day=args.allow_empty_day)
    except DATA_ERRORS as e:
        logging.getLogger("metaemb.jobs").error("%s on %s failed on its data (%s): %s", args.stage, args.date,
                                                type(e).__name__, e)
        return EXIT_NO_RETRY
    print(f"[{args.date}] {args.stage}: {describe(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
