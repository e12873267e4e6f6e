"""Real backfills through Airflow (`airflow standalone` on SQLite metadata, loopback ports):

1. three fresh dates, each the newest when it is published;
2. then a backfill of older dates while a newer day is online, with an empty day in the
   middle: the older dates are rewritten in Delta and pass `check` without being pushed
   online (the online store still serves the newest day), the empty day fails at once
   (no retries: retrying cannot mend an empty input), the date after it still runs, and
   no run of any other date appears.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from project_helpers import airflow_sh, config_for, service_errors, table_counts, task_logs
from core import config as config_mod
from core import tables
from metaemb.airflow import services
from metaemb.status import collect, publish_state

pytestmark = [pytest.mark.spark, pytest.mark.services]

FRESH = [dt.date(2026, 10, 26), dt.date(2026, 10, 27), dt.date(2026, 10, 28)]
OLDER = [dt.date(2026, 10, 25), dt.date(2026, 10, 26), dt.date(2026, 10, 27)]  # 10-26 emptied
EMPTY = dt.date(2026, 10, 26)


def reported_states(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\d{4}-\d\d-\d\d): (\w+)$", stdout, re.M))


def backfill(cfg_path, first: dt.date, last: dt.date):
    proc = airflow_sh(cfg_path, "backfill", first.isoformat(), last.isoformat(), "--timeout", "1500",
                      check=False, timeout=1700)
    took = re.search(r"succeeded in (\d+)s", proc.stdout)
    print(f"backfill {first}..{last}: exit {proc.returncode}, {took.group(1) if took else '?'}s")
    return proc


def created_at(spark, cfg, day: dt.date):
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(str(cfg.table_location(tables.META_EMBEDDINGS)))
    return df.where(F.col(tables.RUN_DATE) == F.lit(day)).agg(F.max(tables.CREATED_TIMESTAMP)).first()[0]


def dag_runs(home) -> list[tuple]:
    con = sqlite3.connect(home / "airflow.db")
    try:
        return con.execute("SELECT date(logical_date), run_type, state FROM dag_run "
                           "WHERE dag_id = 'metaemb_daily' ORDER BY logical_date").fetchall()
    finally:
        con.close()


def task_tries(home, day: dt.date) -> dict[str, tuple[str, int]]:
    con = sqlite3.connect(home / "airflow.db")
    try:
        rows = con.execute("SELECT ti.task_id, ti.state, ti.try_number FROM task_instance ti JOIN dag_run dr "
                           "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.dag_id = 'metaemb_daily' "
                           "AND date(dr.logical_date) = ?", (day.isoformat(),)).fetchall()
    finally:
        con.close()
    return {task: (state, tries) for task, state, tries in rows}


def without_day(src, dst, day: dt.date):
    """The interactions file with every event of `day` removed (an upstream export that came empty)."""
    table = pq.read_table(src)
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    ts = table["event_timestamp"]
    keep = pc.or_(pc.less(ts, start), pc.greater_equal(ts, start + dt.timedelta(days=1)))
    pq.write_table(table.filter(keep), dst)
    return dst


def served_embeddings(cfg, keys: list[dict]):
    from serving.feast_repo import lookup

    return [np.asarray(v, dtype=np.float32) for v in lookup(cfg, keys)[tables.EMBEDDING]]


@pytest.mark.slow
@pytest.mark.services
def test_backfill_fresh_then_older_dates_with_an_empty_day(airflow_project, spark):
    airflow = {"retries": 1, "retry_delay_minutes": 0.05}
    cfg_path = config_for(airflow_project, "backfill", airflow=airflow)
    cfg = config_mod.load(cfg_path)
    home = cfg.path(cfg.airflow.home)
    keys = list(cfg.data.task_key)
    airflow_sh(cfg_path, "start", timeout=600)
    try:
        # 1. Three fresh dates.
        first = backfill(cfg_path, FRESH[0], FRESH[-1])
        detail = f"{first.stdout[-4000:]}\n{first.stderr[-3000:]}\n{service_errors(home)}"
        assert reported_states(first.stdout) == {d.isoformat(): "success" for d in FRESH}, \
            detail + "\n" + task_logs(home, "metaemb_daily", limit=1500)[-20000:]
        assert first.returncode == 0, detail
        newest = FRESH[-1]
        sample = (spark.read.format("delta").load(str(cfg.table_location(tables.META_EMBEDDINGS)))
                  .where(f"{tables.RUN_DATE} = DATE'{newest}'").orderBy(*keys).limit(10)
                  .select(*keys, tables.EMBEDDING).toPandas())
        online_before = served_embeddings(cfg, sample[keys].to_dict("records"))
        for got, want in zip(online_before, sample[tables.EMBEDDING]):
            np.testing.assert_allclose(got, np.asarray(want, dtype=np.float32), atol=1e-6)
        written = {d: created_at(spark, cfg, d) for d in OLDER}
        first_try = task_tries(home, EMPTY)["labeled"][1]
        rows_before = table_counts(spark, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, keys)

        # 2. Older dates while `newest` is online; the middle one's export is empty now.
        data = airflow_project / "data"
        gap = without_day(data / "interactions.parquet", data / "interactions-gap.parquet", EMPTY)
        cfg_path = config_for(airflow_project, "backfill", airflow=airflow, data={"interactions": str(gap)})
        second = backfill(cfg_path, OLDER[0], OLDER[-1])
    finally:
        airflow_sh(cfg_path, "stop", timeout=300)
    detail = f"{second.stdout[-5000:]}\n{second.stderr[-3000:]}\n{service_errors(home)}"
    want = {d.isoformat(): "success" for d in OLDER} | {EMPTY.isoformat(): "failed"}
    assert reported_states(second.stdout) == want, detail + "\n" + task_logs(home, "metaemb_daily", 1500)[-20000:]
    assert second.returncode == 1, detail
    assert not services.standalone_pid(cfg), "the services were not stopped"

    # The empty day failed visibly, at its first task, without using its retry (the backfill
    # cleared the task, so this backfill's only try is the one after the first backfill's).
    assert re.search(rf"{EMPTY} failed: labeled \(try {first_try + 1}, failed\)", second.stdout), detail
    tries = task_tries(home, EMPTY)
    assert tries["labeled"] == ("failed", first_try + 1), tries
    assert all(state == "upstream_failed" for task, (state, _) in tries.items() if task != "labeled"), tries
    assert "0 usable interactions" in task_logs(home, "metaemb_daily"), "the empty day's error is not in its log"

    # Exactly the asked dates ran: no scheduled run, nothing outside the two ranges.
    runs = dag_runs(home)
    assert {(d, t) for d, t, _ in runs} == {(d.isoformat(), "backfill") for d in FRESH + OLDER}, runs

    # The older dates were rewritten in Delta (the empty day's old partition left as it was) ...
    for d in OLDER:
        if d == EMPTY:
            assert created_at(spark, cfg, d) == written[d]
        else:
            assert written[d] is None or created_at(spark, cfg, d) > written[d], (d, written[d])
    rows_after = table_counts(spark, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, keys)
    for d in FRESH + OLDER:
        rows, distinct = rows_after.get(d, (0, 0))
        assert rows > 0 and rows == distinct, (d, rows_after.get(d))
    assert rows_after[EMPTY] == rows_before[EMPTY]
    smp = table_counts(spark, cfg, tables.TASK_SAMPLES, tables.RUN_DATE, keys)
    assert all(smp[d] == rows_after[d] for d in FRESH + OLDER), (smp, rows_after)

    # ... while the online store still serves the newest day, unchanged.
    for got, before in zip(served_embeddings(cfg, sample[keys].to_dict("records")), online_before):
        np.testing.assert_array_equal(got, before)

    # publish_log, the check stage and `metaemb status` say what happened to each older date.
    says = f"written; online serves {newest}"
    days = {d["run_date"]: d for d in collect(cfg)}
    for d in (OLDER[0], OLDER[-1]):
        assert publish_state(days[d.isoformat()]["publish"]) == says, days[d.isoformat()]
    assert publish_state(days[newest.isoformat()]["publish"]) == "published"
    check_detail = (spark.read.format("delta").load(str(cfg.table_location(tables.STAGE_LOG)))
                    .where(f"stage = 'check' AND run_date = DATE'{OLDER[-1]}'")
                    .orderBy("completed_at").select("detail").collect()[-1]["detail"])
    assert check_detail == says
