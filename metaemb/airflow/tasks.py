"""What the DAG files in dags/ are built from (they stay thin wiring): the Spark provider's
SparkSubmitOperator for the Spark stages (labeled, samples, embed, train), a PythonOperator for
the serving stages (publish, check), which need no JVM, and the DAGs' default args and dates.

Every Spark task is `spark-submit metaemb/jobs.py --stage S --date {{ ds }}`, the same stage
code `metaemb run --date` calls in-process. The Spark master comes from the Airflow connection
`[airflow] spark_conn_id`, which metaemb.airflow.env defines from `[spark] master`; the
spark-submit settings (metaemb.jobs.submit_settings) are filled in on the worker, just before
the task's templates render: they then describe the worker's own venv and jars, appear in the
task's rendered fields, and DAG parsing imports nothing heavy (no pyspark, no torch).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from core import config as config_mod
from core import stages
from core.stages import EXIT_FAILED_ON_DATA
from metaemb.jobs import JOBS_APP, submit_settings


def failed_on_its_data(what: str) -> AirflowFailException:
    """Fails the task without retries: the same input would fail the same way, and retries would
    hold a backfill up for the whole retry budget."""
    return AirflowFailException(f"{what}; not retried: fix the input or config, then clear the task")


class MetaembSparkSubmitOperator(SparkSubmitOperator):
    """The provider's SparkSubmitOperator; conf and --jars come from the config on the worker.

    A stage that failed on its data (exit EXIT_FAILED_ON_DATA) fails the task at once: a retry
    would fail the same way and hold a backfill up for the whole retry budget.
    """

    def execute(self, context) -> None:
        try:
            super().execute(context)
        except AirflowException as e:
            if re.search(rf"Error code is: {EXIT_FAILED_ON_DATA}\b", str(e)):
                raise failed_on_its_data(f"{self.task_id} failed on its data (exit {EXIT_FAILED_ON_DATA}, the error is "
                                         "in the log above)") from e
            raise

    def render_template_fields(self, context, jinja_env=None) -> None:
        cfg = config_mod.load((self.env_vars or {}).get("METAEMB_CONFIG"))
        settings = submit_settings(cfg)
        self.conf = {**settings["conf"], **(self.conf or {})}
        self.jars = self.jars or settings["jars"]
        super().render_template_fields(context, jinja_env)


def stage_task(stage: str, cfg: config_mod.Config, *, extra_args: list[str] = ()):
    """One SparkSubmitOperator: `spark-submit metaemb/jobs.py --stage STAGE --date {{ ds }}`."""
    app_args = ["--stage", stage, "--date", "{{ ds }}"]
    env = {"METAEMB_CONFIG": cfg.file} if cfg.file else {}
    if env:
        app_args += ["--config", env["METAEMB_CONFIG"]]
    return MetaembSparkSubmitOperator(
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
        doc_md=f"`spark-submit metaemb/jobs.py --stage {stage} --date {{{{ ds }}}}`",
    )


def run_serving_stage(stage: str, run_date: str, config: str | None) -> None:
    """A PythonOperator's callable: publish or check for the logical date, in the task process."""
    from metaemb.daily import DATA_ERRORS, describe
    from serving import stages

    cfg = config_mod.load(config)
    try:
        result = stages.run(cfg, stage, dt.date.fromisoformat(run_date))
    except DATA_ERRORS as e:
        raise failed_on_its_data(f"{stage} on {run_date} failed on its data ({type(e).__name__}): {e}") from e
    print(f"[{run_date}] {stage}: {describe(result)}", flush=True)


def serving_task(stage: str, cfg: config_mod.Config):
    """publish or check as a plain Python task: delta-rs reads and Feast, no spark-submit. With
    [feast] write_from = "spark", publish is a spark-submit too: its executors write the day."""
    if stage == stages.PUBLISH and cfg.feast.write_from == "spark":
        return stage_task(stage, cfg)
    return PythonOperator(
        task_id=stage,
        python_callable=run_serving_stage,
        op_kwargs={"stage": stage, "run_date": "{{ ds }}", "config": cfg.file},
        doc_md=f"`serving.stages.run(cfg, {stage!r}, {{{{ ds }}}})` in the task process (no JVM)",
    )


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
