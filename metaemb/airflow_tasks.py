"""The task factories of the DAGs: the Spark provider's SparkSubmitOperator for the Spark
stages (labeled, samples, embed, train), a PythonOperator for the serving stages (publish,
check), which need no JVM.

Imported by dags/*.py only (it imports Airflow); settings come from metaemb.airflow_dags.
"""

from __future__ import annotations

import datetime as dt
import re

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from core import config as config_mod
from metaemb.airflow_dags import EXIT_NO_RETRY, JOBS_APP, config_file, spark_submit_settings


def failed_on_its_data(what: str) -> AirflowFailException:
    """Fails the task without retries: the same input would fail the same way, and retries would
    hold a backfill up for the whole retry budget."""
    return AirflowFailException(f"{what}; not retried: fix the input or config, then clear the task")


class MetaembSparkSubmitOperator(SparkSubmitOperator):
    """The provider's SparkSubmitOperator; conf and --jars come from the config on the worker.

    A stage that failed on its data (exit EXIT_NO_RETRY) fails the task at once: a retry
    would fail the same way and hold a backfill up for the whole retry budget.
    """

    def execute(self, context) -> None:
        try:
            super().execute(context)
        except AirflowException as e:
            if re.search(rf"Error code is: {EXIT_NO_RETRY}\b", str(e)):
                raise failed_on_its_data(f"{self.task_id} failed on its data (exit {EXIT_NO_RETRY}, the error is "
                                         "in the log above)") from e
            raise

    def render_template_fields(self, context, jinja_env=None) -> None:
        cfg = config_mod.load((self.env_vars or {}).get("METAEMB_CONFIG"))
        settings = spark_submit_settings(cfg)
        self.conf = {**settings["conf"], **(self.conf or {})}
        self.jars = self.jars or settings["jars"]
        super().render_template_fields(context, jinja_env)


def stage_task(stage: str, cfg: config_mod.Config, *, extra_args: list[str] = ()):
    """One SparkSubmitOperator: `spark-submit pipelines/jobs.py --stage STAGE --date {{ ds }}`."""
    app_args = ["--stage", stage, "--date", "{{ ds }}"]
    env = {"METAEMB_CONFIG": config_file(cfg)} if config_file(cfg) else {}
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
        doc_md=f"`spark-submit pipelines/jobs.py --stage {stage} --date {{{{ ds }}}}`",
    )


def run_serving_stage(stage: str, run_date: str, config: str | None) -> None:
    """A PythonOperator's callable: publish or check for the logical date, in the task process."""
    from metaemb.daily import describe
    from serving import stages

    cfg = config_mod.load(config)
    try:
        result = stages.run(cfg, stage, dt.date.fromisoformat(run_date))
    except stages.DATA_ERRORS as e:
        raise failed_on_its_data(f"{stage} on {run_date} failed on its data ({type(e).__name__}): {e}") from e
    print(f"[{run_date}] {stage}: {describe(result)}", flush=True)


def serving_task(stage: str, cfg: config_mod.Config) -> PythonOperator:
    """publish or check as a plain Python task: delta-rs reads and Feast, no spark-submit."""
    return PythonOperator(
        task_id=stage,
        python_callable=run_serving_stage,
        op_kwargs={"stage": stage, "run_date": "{{ ds }}", "config": config_file(cfg)},
        doc_md=f"`serving.stages.run(cfg, {stage!r}, {{{{ ds }}}})` in the task process (no JVM)",
    )
