"""A real `airflow dags test metaemb_daily <date>` on SQLite metadata in a temp AIRFLOW_HOME:
five spark-submits of pipelines/jobs.py, then the day's rows are in the Delta tables."""

from __future__ import annotations

import re
import sqlite3

import pytest

from af_helpers import DAGS_TEST_DATE, airflow_sh, config_for, table_counts, task_logs
from core import config as config_mod
from core import tables

STAGES = ["labeled", "samples", "embed", "publish", "check"]


def task_states_sqlite(db, dag_id: str, logical_date: str) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr "
            "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
            "WHERE dr.dag_id = ? AND date(dr.logical_date) = ?", (dag_id, logical_date)).fetchall()
    finally:
        con.close()
    return dict(rows)


@pytest.mark.slow
def test_airflow_dags_test_daily_on_sqlite(airflow_project, spark):
    cfg_path = config_for(airflow_project, "dagstest")
    cfg = config_mod.load(cfg_path)
    day = DAGS_TEST_DATE.isoformat()
    proc = airflow_sh(cfg_path, "dags-test", day, check=False, timeout=1800)
    home = cfg.path(cfg.airflow.home)
    seconds = re.search(r"dags test metaemb_daily \S+: exit \d+ in ([\d.]+)s", proc.stdout)
    print(f"airflow dags test metaemb_daily {day}: exit {proc.returncode}, "
          f"{seconds.group(1) if seconds else '?'}s (whole helper call {proc.seconds:.0f}s)")
    states = task_states_sqlite(home / "airflow.db", "metaemb_daily", day)
    detail = f"task states {states}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{task_logs(home, 'metaemb_daily')}"
    assert states == {s: "success" for s in STAGES}, detail
    assert proc.returncode == 0, detail

    # The spark-submit jobs wrote the day: one embedding per task, no duplicates.
    keys = list(cfg.data.task_key)
    emb = table_counts(spark, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, keys)
    rows, distinct = emb.get(DAGS_TEST_DATE, (0, 0))
    assert rows > 0 and rows == distinct, emb
    smp = table_counts(spark, cfg, tables.TASK_SAMPLES, tables.RUN_DATE, keys)
    assert smp.get(DAGS_TEST_DATE, (0, 0))[0] == rows, (smp, emb)
