"""What the Airflow DAG files in dags/ are built from (they stay thin wiring).

Every task is the Spark provider's SparkSubmitOperator launching `pipelines/jobs.py`
for one stage and the run's logical date (`{{ ds }}`), the same entry point
`metaemb run --date` calls in-process. The Spark master comes from the Airflow
connection `[airflow] spark_conn_id`, which `metaemb.airflow_env` defines from
`[spark] master` (env AIRFLOW_CONN_<ID>); Spark settings come from
`pipelines.spark.spark_conf(cfg)`, the same settings the in-process session uses.

Only light modules are imported here at DAG-parse time (metaemb.config and the provider's
operator). The Spark settings need pyspark (pipelines.spark), so they are filled in on the
worker, just before the task's templates render: they then describe the worker's own venv
and jars, appear in the task's rendered fields, and DAG parsing stays well under a second.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from metaemb import config as config_mod

PROJECT_ROOT = config_mod.PROJECT_ROOT
JOBS_APP = PROJECT_ROOT / "pipelines" / "jobs.py"
DAILY_DAG_ID = "metaemb_daily"
RETRAIN_DAG_ID = "metaemb_retrain"
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
    return {"conf": conf, "jars": jars}


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


def start_date(cfg: config_mod.Config) -> dt.datetime:
    d = dt.date.fromisoformat(cfg.airflow.start_date)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc)


def _operator_class():
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    class MetaembSparkSubmitOperator(SparkSubmitOperator):
        """The provider's SparkSubmitOperator; conf and --jars come from the config on the worker."""

        def render_template_fields(self, context, jinja_env=None) -> None:
            settings = spark_submit_settings(load_config())
            self.conf = {**settings["conf"], **(self.conf or {})}
            self.jars = self.jars or settings["jars"]
            super().render_template_fields(context, jinja_env)

    MetaembSparkSubmitOperator.__module__ = __name__
    MetaembSparkSubmitOperator.__qualname__ = "MetaembSparkSubmitOperator"
    return MetaembSparkSubmitOperator


def stage_task(stage: str, cfg: config_mod.Config, *, extra_args: list[str] = ()):
    """One SparkSubmitOperator: `spark-submit pipelines/jobs.py --stage STAGE --date {{ ds }}`."""
    app_args = ["--stage", stage, "--date", "{{ ds }}"]
    env = {"METAEMB_CONFIG": config_file(cfg)} if config_file(cfg) else {}
    if env:
        app_args += ["--config", env["METAEMB_CONFIG"]]
    return _operator_class()(
        task_id=stage,
        application=str(JOBS_APP),
        application_args=app_args + list(extra_args),
        conn_id=cfg.airflow.spark_conn_id,
        driver_memory=cfg.spark.driver_memory,
        name=f"metaemb-{stage}-{{{{ ds }}}}",
        env_vars=env or None,
        # Local/client mode has no external driver id to re-attach to: a retry resubmits,
        # which is safe because every stage replaces exactly its date's partition.
        durable=False,
        doc_md=f"`spark-submit pipelines/jobs.py --stage {stage} --date {{{{ ds }}}}`",
    )
