"""The spark-submit application: one stage of the daily job for one date, and how to submit it.

    spark-submit metaemb/jobs.py --stage embed --date 2026-10-30 [--config metaemb.toml]
    spark-submit metaemb/jobs.py --stage train --date 2026-10-27   (the retrain DAG)
    python metaemb/jobs.py --stage publish --date 2026-10-30        (publish and check start no JVM)

Airflow's SparkSubmitOperator launches this file (metaemb.airflow.tasks); `metaemb run` calls the
same metaemb.daily.run_stage in-process; submit_command() is the command line for running one
stage by hand or under another scheduler. A stage that failed on its data exits with
core.stages.EXIT_FAILED_ON_DATA. Importing this module is light: the stage code loads in main().
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # spark-submit runs this file as a script: the project root must be importable, and this
    # folder must not be on the path (its metaemb/airflow/ would shadow the airflow package).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from core import config as config_mod  # noqa: E402
from core import stages  # noqa: E402

JOBS_APP = Path(__file__).resolve()
LOG4J_CONF = config_mod.PROJECT_ROOT / "deploy" / "log4j2-spark-submit.properties"
# Settings spark-submit takes as its own options (or owns), so they are not passed as --conf.
SUBMIT_OWNED = ("spark.jars", "spark.driver.memory", "spark.master", "spark.app.name", "spark.submit.deployMode")


def submit_settings(cfg: config_mod.Config) -> dict[str, Any]:
    """conf / jars for spark-submit, from pipelines.spark.spark_conf (no pyspark import)."""
    from pipelines.spark import spark_conf

    conf = spark_conf(cfg)
    jars = conf.get("spark.jars", "")
    # The Python workers must find the project packages whatever the worker's cwd is.
    pythonpath = [str(config_mod.PROJECT_ROOT)] + [p for p in conf.get("spark.executorEnv.PYTHONPATH", "").split(os.pathsep) if p]
    conf["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))
    for key in SUBMIT_OWNED:
        conf.pop(key, None)
    # Spark's INFO chatter would fill the task log line by line: warnings only.
    java_options = f"-Dlog4j2.configurationFile=file:{LOG4J_CONF} {conf.get('spark.driver.extraJavaOptions', '')}"
    conf["spark.driver.extraJavaOptions"] = java_options.strip()
    return {"conf": conf, "jars": jars}


def submit_command(cfg: config_mod.Config, stage: str, run_date: dt.date,
                   spark_submit: str = "spark-submit") -> list[str]:
    """The command line an Airflow stage task runs (same conf, jars, memory and app args)."""
    settings = submit_settings(cfg)
    argv = [spark_submit, "--master", cfg.spark.master, "--deploy-mode", "client"]
    for key, value in settings["conf"].items():
        argv += ["--conf", f"{key}={value}"]
    if settings["jars"]:
        argv += ["--jars", settings["jars"]]
    argv += ["--driver-memory", cfg.spark.driver_memory, "--name", f"metaemb-{stage}-{run_date}",
             str(JOBS_APP), "--stage", stage, "--date", run_date.isoformat()]
    if cfg.file:
        argv += ["--config", cfg.file]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=(*stages.DAILY, stages.TRAIN))
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="run date (logical date)")
    parser.add_argument("--config", help="TOML config (default: $METAEMB_CONFIG / ./metaemb.toml / defaults)")
    parser.add_argument("--model-version")
    parser.add_argument("--allow-empty-day", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from metaemb.daily import DATA_ERRORS, describe, needs_spark, run_stage
    from pipelines.labeled import resolve_inputs
    from pipelines.lake import check_storage
    from pipelines.spark import get_spark

    cfg = config_mod.load(args.config)
    try:
        if not needs_spark(cfg, args.stage):  # publish and check: no JVM
            result = run_stage(None, cfg, args.stage, args.date, None)
        else:
            inputs = resolve_inputs(cfg)
            check_storage(cfg)
            spark = get_spark(cfg, app_name=f"metaemb-{args.stage}-{args.date}")
            result = run_stage(spark, cfg, args.stage, args.date, inputs, model_version=args.model_version,
                               allow_empty_day=args.allow_empty_day)
    except DATA_ERRORS as e:
        logging.getLogger("metaemb.jobs").error("%s on %s failed on its data (%s): %s", args.stage, args.date,
                                                type(e).__name__, e)
        return stages.EXIT_FAILED_ON_DATA
    print(f"[{args.date}] {args.stage}: {describe(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
