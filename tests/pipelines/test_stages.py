"""labeled_interactions and task_samples on real Spark + Delta: point-in-time, quarantine, reruns."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from core import tables
from pipelines import labeled, lake, row_rules, samples, spark_io
from project_helpers import make_config

pytestmark = pytest.mark.spark

UTC = dt.timezone.utc
D1 = dt.date(2026, 10, 1)


def ts(day: int, hour: int = 0, minute: int = 0) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime(2026, 10, day, hour, minute, tzinfo=UTC))


def write_inputs(tmp_path, events: list[dict], snaps: list[dict]):
    inter, feats = tmp_path / "interactions.parquet", tmp_path / "features.parquet"
    df = pd.DataFrame(events)
    df["user_id"] = df["user_id"].astype("Int64")  # a null key stays an integer column
    df.to_parquet(inter, coerce_timestamps="us")
    pd.DataFrame(snaps).to_parquet(feats, coerce_timestamps="us")
    return inter, feats


def event(user, day, hour, minute=0, item=7, label=1, ctx=0.5):
    return {"user_id": user, "item_id": item, "event_timestamp": ts(day, hour, minute), "label": label, "ctx_0": ctx}


def snap(user, day, hour, value):
    return {"user_id": user, "feature_timestamp": ts(day, hour), "f_0": float(value)}


@pytest.fixture
def pit_run(spark, tmp_path):
    events = [
        event(1, 1, 6),            # snapshots so far: 00:00 (1.0)          -> 1.0
        event(1, 1, 12),           # a snapshot at exactly 12:00 (2.0)      -> 2.0 (at or before)
        event(1, 1, 23, 59),       # next snapshot is tomorrow 00:00 (3.0)  -> 2.0, never the future one
        event(1, 2, 1),            #                                         -> 3.0
        event(2, 1, 5),            # user 2's only snapshot comes later     -> no features
        event(3, 2, 3),            # user 3's snapshot is 40 days old > ttl -> no features
    ]
    snaps = [snap(1, 1, 0, 1.0), snap(1, 1, 12, 2.0), snap(1, 2, 0, 3.0), snap(1, 3, 0, 99.0),
             snap(2, 1, 6, 5.0)]
    snaps.append({"user_id": 3, "feature_timestamp": ts(2, 0) - pd.Timedelta(days=40), "f_0": 7.0})
    inter, feats = write_inputs(tmp_path, events, snaps)
    cfg = make_config(tmp_path, data={"interactions": str(inter), "entity_features": str(feats)},
                      pipeline={"window_days": 2})
    inputs = labeled.resolve_inputs(cfg)
    result = labeled.run(spark, cfg, inputs, dt.date(2026, 10, 2))
    rows = spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS).orderBy("user_id", "event_timestamp").collect()
    return cfg, inputs, result, rows


def test_point_in_time_join_never_uses_a_future_snapshot(pit_run):
    _, _, result, rows = pit_run
    got = [(r.user_id, r.event_timestamp.astimezone(UTC).strftime("%d %H:%M"), r.meta[0], r.has_features)
           for r in rows]
    assert got == [
        ("1", "01 06:00", 1.0, True),
        ("1", "01 12:00", 2.0, True),
        ("1", "01 23:59", 2.0, True),
        ("1", "02 01:00", 3.0, True),
        ("2", "01 05:00", 0.0, False),
        ("3", "02 03:00", 0.0, False),
    ]
    assert result["dates_computed"] == 2 and result["rows_without_features"] == 2


def test_rerun_of_a_date_replaces_it_without_duplicates(spark, pit_run):
    cfg, inputs, _, rows = pit_run
    run_date = dt.date(2026, 10, 2)
    again = labeled.run(spark, cfg, inputs, run_date)
    assert again["dates_computed"] == 1  # the window's other day was done by the first run
    after = spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS)
    assert after.count() == len(rows)
    assert after.groupBy("user_id", "event_timestamp").count().where("count > 1").count() == 0
    first = samples.run(spark, cfg, run_date)
    second = samples.run(spark, cfg, run_date)
    table = spark_io.read_table(spark, cfg, tables.TASK_SAMPLES)
    assert first["rows"] == second["rows"] == table.count() == 3


def test_task_samples_are_capped_chronological_and_split(spark, tmp_path):
    events = [event(1, 1 + i // 4, (i % 4) * 5, item=i, label=i % 2) for i in range(12)] + [event(2, 2, 9)]
    inter, feats = write_inputs(tmp_path, events, [snap(1, 1, 0, 1.0), snap(2, 1, 0, 2.0)])
    cfg = make_config(tmp_path, data={"interactions": str(inter), "entity_features": str(feats)},
                      pipeline={"window_days": 3, "cap_samples": 8, "support_fraction": 0.75})
    run_date = dt.date(2026, 10, 3)
    labeled.run(spark, cfg, labeled.resolve_inputs(cfg), run_date)
    samples.run(spark, cfg, run_date)
    tasks = {r.user_id: r for r in spark_io.read_table(spark, cfg, tables.TASK_SAMPLES).collect()}
    one = tasks["1"]
    assert one.n_samples == 8 and one.n_support == 6
    assert one.timestamps == sorted(one.timestamps)  # chronological
    # the 8 most recent of 12 events: items 4..11, whose labels alternate 0, 1
    assert one.labels == [float(i % 2) for i in range(4, 12)]
    assert len(one.meta) == 8 * 1 and len(one.context) == 8 * 1
    assert tasks["2"].n_samples == 1 and tasks["2"].n_support == 1  # cold start still gets a task


def test_row_faults_are_quarantined_with_reasons(spark, tmp_path):
    events = [event(1, 1, 6), event(1, 1, 6),  # duplicate
              event(1, 1, 7, label=2),  # label outside {0,1}
              event(1, 1, 8, ctx=float("nan")),  # NaN context
              event(None, 1, 9),  # null task key
              event(2, 1, 10)]
    inter, feats = write_inputs(tmp_path, events, [snap(1, 1, 0, 1.0)])
    cfg = make_config(tmp_path, data={"interactions": str(inter), "entity_features": str(feats)},
                      pipeline={"window_days": 1})
    result = labeled.run(spark, cfg, labeled.resolve_inputs(cfg), D1)
    assert result["rows"] == 2
    assert result["quarantined"] == {row_rules.DUPLICATE: 1, row_rules.BAD_LABEL: 1, row_rules.NON_FINITE: 1, row_rules.NULL_KEY: 1}
    q = spark_io.read_table(spark, cfg, tables.QUARANTINE)
    assert q.where(F.col("run_date") == F.lit(D1)).count() == 4


def test_empty_run_date_fails_clearly_and_writes_nothing(spark, tmp_path):
    inter, feats = write_inputs(tmp_path, [event(1, 1, 6)], [snap(1, 1, 0, 1.0)])
    cfg = make_config(tmp_path, data={"interactions": str(inter), "entity_features": str(feats)},
                      pipeline={"window_days": 3})
    with pytest.raises(labeled.EmptyDayError, match="0 usable interactions on run date 2026-10-03"):
        labeled.run(spark, cfg, labeled.resolve_inputs(cfg), dt.date(2026, 10, 3))
    assert not lake.table_exists(cfg, tables.LABELED_INTERACTIONS)
