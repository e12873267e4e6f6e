"""kill -9 of the fine-tune stage, the way a lost worker ends it: the stage's real
spark-submit (the command an Airflow task runs) is parked inside the fine-tune of a Python
worker, after its first batch is computed and before anything is committed, and its whole
process group (driver, JVM, Python workers) gets SIGKILL.

Afterwards the online store still serves the previous complete day, meta_embeddings holds
no row of the killed date, the stage log does not call it done, and a rerun completes.
(kill -9 in the middle of the publish itself: tests/feast/test_feast_publish.py.)"""

from __future__ import annotations

import pytest

import datetime as dt

import numpy as np

from project_helpers import kill9_stage_when_paused, own_lake_config
from core import tables
from pipelines import labeled, lake, spark_io
from serving import feast_repo, slots
from metaemb.daily import run_daily

pytestmark = pytest.mark.spark

D1, D2 = dt.date(2026, 10, 26), dt.date(2026, 10, 27)


def online(cfg, keys: list[str]):
    df = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])
    return df.sort_values("user_id").reset_index(drop=True)


def partition(spark, cfg, day: dt.date) -> dict[str, np.ndarray]:
    from pyspark.sql import functions as F

    rows = (spark_io.read_table(spark, cfg, tables.META_EMBEDDINGS).where(F.col(tables.RUN_DATE) == F.lit(day))
            .select("user_id", tables.EMBEDDING).collect())
    return {r.user_id: np.asarray(r[tables.EMBEDDING], dtype=np.float32) for r in rows}


def test_kill9_in_finetune_keeps_previous_day_and_rerun_completes(airflow_project, spark, tmp_path):
    root = airflow_project
    cfg = own_lake_config(root, tmp_path, "killft")
    inputs = labeled.resolve_inputs(cfg)
    quiet = dict(progress=lambda _: None)

    run_daily(spark, cfg, D1, inputs, **quiet)
    keys = sorted(partition(spark, cfg, D1))
    day1 = online(cfg, keys)
    assert len(keys) > 100 and day1["embedding"].notna().all()

    run_daily(spark, cfg, D2, inputs, stages=("labeled", "samples"), **quiet)
    kill9_stage_when_paused(cfg, "embed", D2, "embed:after-first-batch", tmp_path / "embed.log")

    # Nothing of D2 is visible anywhere; readers still get the whole of D1.
    assert partition(spark, cfg, D2) == {}, "a killed fine-tune left rows of its date"
    assert D2 not in lake.completed_dates(cfg, "embed")
    after = online(cfg, keys)
    assert after.equals(day1), "the online store changed although the run never reached publish"
    assert slots.served_day(feast_repo.feature_store(cfg)) == D1

    # The rerun (what Airflow's retry does) completes and serves the whole of D2.
    run_daily(spark, cfg, D2, inputs, stages=("embed", "publish", "check"), **quiet)
    assert D2 in lake.completed_dates(cfg, "embed")
    day2 = partition(spark, cfg, D2)
    served = online(cfg, sorted(day2))
    got = {k: np.asarray(v, dtype=np.float32) for k, v in zip(served["user_id"], served["embedding"])}
    assert set(got) == set(day2)
    for k in day2:
        np.testing.assert_array_equal(got[k], day2[k])
