"""metaemb_daily: the daily meta-embedding job.

labeled -> samples -> embed, each `spark-submit metaemb/jobs.py --stage S --date {{ ds }}`,
then publish -> check, plain Python tasks (delta-rs and Feast, no JVM); all keyed on the
run's logical date (`{{ ds }}`; Airflow 3's CronTriggerTimetable has
zero-length data intervals, so the logical date is the key, never data_interval_start).
Runs never overlap (max_active_runs=1) because they rewrite partitions of the same Delta
tables. Backfill: `metaemb airflow backfill FROM TO` (Airflow's REST API).
Config: $METAEMB_CONFIG (paths, [spark] master, [airflow] schedule / retries / pool).
"""

from __future__ import annotations

from airflow.sdk import DAG

from core import stages
from metaemb.airflow import env, tasks

cfg = env.load_config()

with DAG(
    dag_id=env.DAILY_DAG_ID,
    description="Daily LiMAML meta embeddings: Spark + Delta -> per-task fine-tune -> Feast",
    schedule=cfg.airflow.daily_schedule,
    start_date=tasks.start_date(cfg),
    end_date=tasks.end_date(cfg),
    catchup=cfg.airflow.catchup,
    max_active_runs=1,
    default_args=tasks.default_args(cfg),
    tags=["metaemb"],
    doc_md=__doc__,
) as dag:
    chain = [tasks.stage_task(stage, cfg) for stage in stages.SPARK_STAGES]
    chain += [tasks.serving_task(stage, cfg) for stage in stages.SERVING_STAGES]
    for upstream, downstream in zip(chain, chain[1:]):
        upstream >> downstream
