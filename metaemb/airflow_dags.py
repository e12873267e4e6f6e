"""What the Airflow DAG files in dags/ are built from (they stay thin wiring): settings.

This module does not import Airflow (metaemb.airflow_env uses it before Airflow's
environment is set); the operator is in metaemb.airflow_tasks.

Every task is the Spark provider's SparkSubmitOperator launching `pipelines/jobs.py`
for one stage and the run's logical date (`{{ ds }}`), the same entry point
`metaemb run --date` calls in-process. The Spark master comes from the Airflow
connection `[airflow] spark_conn_id`, which `metaemb.airflow_env` defines from
`[spark] master` (env AIRFLOW_CONN_<ID>); Spark settings come from
`pipelines.spark.spark_conf(cfg)`, the same settings the in-process session uses.

Only light modules are imported here at DAG-parse time (core.config and the provider's
operator). The Spark settings need pyspark (pipelines.spark), so they are filled in on the
worker, just before the task's templates render: they then describe the worker's own venv
and jars, appear in the task's rendered fields, and DAG parsing stays well under a second.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from core import config as config_mod

PROJECT_ROOT = config_mod.PROJECT_ROOT
JOBS_APP = PROJECT_ROOT / "pipelines" / "jobs.py"
LOG4J_CONF = PROJECT_ROOT / "deploy" / "log4j2-spark-submit.properties"
DAILY_DAG_ID = "metaemb_daily"
RETRAIN_DAG_ID = "metaemb_retrain"
# pipelines/jobs.py exits with this when the stage failed on its data (an empty day, bad input,
# a mismatched checkpoint, a blocked gate, a failed check): the task then fails without retries.
EXIT_NO_RETRY = 3
# SQLite metadata DB: every Airflow process waits this long for another writer's lock instead of
# sqlite3's default 5 s (api-server requests failed with "Database error" while the scheduler
# and task runners wrote). Airflow reads it by import path: [database] sql_alchemy_connect_args.
SQLITE_CONNECT_ARGS = {"timeout": 60}
# Settings spark-submit takes as its own options (or owns), so they are not passed as --conf.
SUBMIT_OWNED = ("spark.jars", "spark.driver.memory", "spark.master", "spark.app.name", "spark.submit.deployMode")


def load_config() -> config_mod.Config:
    """The config the DAGs use: $METAEMB_CONFIG, else ./metaemb.toml, else defaults."""
    return config_mod.load()


def config_file(cfg: config_mod.Config) -> str | None:
    """Absolute path of the config file the DAG was built from (None: built-in defaults)."""
    p = Path(cfg.source)
    return str(p) if p.is_file() else None


def connection_env_name(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


def spark_connection(cfg: config_mod.Config) -> dict[str, Any]:
    """The Spark connection (JSON form for AIRFLOW_CONN_<ID>): master from config, client mode.

    conn_type "spark" with the full master URL as host is how the provider reads
    `local[*]`, `spark://host:7077`, `k8s://https://...` or `yarn` alike.
    """
    return {
        "conn_type": "spark",
        "host": cfg.spark.master,
        "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
    }


def spark_submit_settings(cfg: config_mod.Config) -> dict[str, Any]:
    """conf / jars for spark-submit, from pipelines.spark.spark_conf (imports pyspark)."""
    from pipelines.spark import spark_conf

    conf = spark_conf(cfg)
    jars = conf.get("spark.jars", "")
    # The Python workers must find the project packages whatever the worker's cwd is.
    pythonpath = [str(PROJECT_ROOT)] + [p for p in conf.get("spark.executorEnv.PYTHONPATH", "").split(os.pathsep) if p]
    conf["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))
    for key in SUBMIT_OWNED:
        conf.pop(key, None)
    # Spark's INFO chatter would fill the task log line by line: warnings only.
    java_options = f"-Dlog4j2.configurationFile=file:{LOG4J_CONF} {conf.get('spark.driver.extraJavaOptions', '')}"
    conf["spark.driver.extraJavaOptions"] = java_options.strip()
    return {"conf": conf, "jars": jars}


def spark_submit_command(cfg: config_mod.Config, stage: str, run_date: dt.date,
                         spark_submit: str = "spark-submit") -> list[str]:
    """The command line an Airflow stage task runs (same conf, jars, memory and app args),
    for running one stage by hand or under another scheduler."""
    settings = spark_submit_settings(cfg)
    argv = [spark_submit, "--master", cfg.spark.master, "--deploy-mode", "client"]
    for key, value in settings["conf"].items():
        argv += ["--conf", f"{key}={value}"]
    if settings["jars"]:
        argv += ["--jars", settings["jars"]]
    argv += ["--driver-memory", cfg.spark.driver_memory, "--name", f"metaemb-{stage}-{run_date}",
             str(JOBS_APP), "--stage", stage, "--date", run_date.isoformat()]
    if config_file(cfg):
        argv += ["--config", config_file(cfg)]
    return argv


def default_args(cfg: config_mod.Config) -> dict[str, Any]:
    a = cfg.airflow
    args: dict[str, Any] = {
        "owner": "metaemb",
        "retries": a.retries,
        "retry_delay": dt.timedelta(minutes=a.retry_delay_minutes),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(hours=1),
        "execution_timeout": dt.timedelta(minutes=a.execution_timeout_minutes),
        "depends_on_past": False,
    }
    if a.pool:
        args["pool"] = a.pool
    return args


def _utc_midnight(value: str) -> dt.datetime:
    d = dt.date.fromisoformat(value)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc)


def start_date(cfg: config_mod.Config) -> dt.datetime:
    return _utc_midnight(cfg.airflow.start_date)


def end_date(cfg: config_mod.Config) -> dt.datetime | None:
    return _utc_midnight(cfg.airflow.end_date) if cfg.airflow.end_date else None
