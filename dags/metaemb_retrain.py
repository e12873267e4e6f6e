"""metaemb_retrain: retrain theta_meta / theta_global and register a new model version.

`spark-submit metaemb/jobs.py --stage train --date {{ ds }}` (what `metaemb train --date`
runs): builds the training window ending at the logical date, trains, writes a checkpoint
whose version the next daily runs pick up. Weekly by default ([airflow] retrain_schedule;
"" = manual trigger only). Shares the `[airflow] pool` with metaemb_daily so a retrain
never writes the Delta tables while a daily run does.
"""

from __future__ import annotations

from airflow.sdk import DAG

from core import stages
from metaemb.airflow import env, tasks

cfg = env.load_config()

with DAG(
    dag_id=env.RETRAIN_DAG_ID,
    description="Retrain the LiMAML model (Algorithm 2a) on the window ending at the logical date",
    schedule=cfg.airflow.retrain_schedule or None,
    start_date=tasks.start_date(cfg),
    end_date=tasks.end_date(cfg),
    catchup=False,
    max_active_runs=1,
    default_args=tasks.default_args(cfg),
    tags=["metaemb"],
    doc_md=__doc__,
) as dag:
    tasks.stage_task(stages.TRAIN, cfg)
