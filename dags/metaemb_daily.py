"""metaemb_daily: the daily meta-embedding job.

labeled -> samples -> embed, each `spark-submit pipelines/jobs.py --stage S --date {{ ds }}`,
then publish -> check, plain Python tasks (delta-rs and Feast, no JVM); all keyed on the
run's logical date (`{{ ds }}`; Airflow 3's CronTriggerTimetable has
zero-length data intervals, so the logical date is the key, never data_interval_start).
Runs never overlap (max_active_runs=1) because they rewrite partitions of the same Delta
tables. Backfill: `scripts/airflow.sh backfill FROM TO` (airflow backfill create ...).
Config: $METAEMB_CONFIG (paths, [spark] master, [airflow] schedule / retries / pool).
"""

from __future__ import annotations

from airflow.sdk import DAG

from metaemb import airflow_dags as wiring
from metaemb.airflow_tasks import serving_task, stage_task

cfg = wiring.load_config()

with DAG(
    dag_id=wiring.DAILY_DAG_ID,
    description="Daily LiMAML meta embeddings: Spark + Delta -> per-task fine-tune -> Feast",
    schedule=cfg.airflow.daily_schedule,
    start_date=wiring.start_date(cfg),
    end_date=wiring.end_date(cfg),
    catchup=cfg.airflow.catchup,
    max_active_runs=1,
    default_args=wiring.default_args(cfg),
    tags=["metaemb"],
    doc_md=__doc__,
) as dag:
    tasks = [stage_task(stage, cfg) for stage in ("labeled", "samples", "embed")]
    tasks += [serving_task(stage, cfg) for stage in ("publish", "check")]
    for upstream, downstream in zip(tasks, tasks[1:]):
        upstream >> downstream
