"""Publish, its gate and check stream a day through in batches of [feast] batch_rows: in
batches of 7 rows they give what one batch gives, figure for figure and row for row, on
SQLite and on a real Redis (real Spark-written Delta partitions, real Feast stores)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from core import tables
from pipelines import lake, spark_io
from serving import check as check_stage, day, feast_repo, publish

from project_helpers import make_config, online_store_config
from serving_helpers import random_embeddings, write_meta_embeddings

pytestmark = pytest.mark.spark

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
N = 200
OLD = [f"u{i}" for i in range(N)]
NEW = OLD[50:] + [f"n{i}" for i in range(60)]  # 150 tasks stay, 50 leave, 60 arrive


def _write_day(spark, cfg, run_date, keys, emb):
    write_meta_embeddings(spark, cfg, run_date, keys, emb)
    samples = spark.createDataFrame([(k, run_date) for k in keys], f"user_id string, {tables.RUN_DATE} date")
    spark_io.replace_partitions(samples, cfg, tables.TASK_SAMPLES, tables.RUN_DATE, [run_date])
    lake.log_stage(cfg, "embed", {run_date: len(keys)}, 1.0, "model=v1")


@pytest.mark.parametrize("online", ["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def test_small_batches_give_what_one_batch_gives(spark, tmp_path, online, request):
    extra = online_store_config(online, request)
    emb1 = random_embeddings(N, seed=21)
    by_key = dict(zip(OLD, emb1))
    emb2 = np.stack([by_key.get(k, np.zeros(32, np.float32)) for k in NEW]) + 0.3 * random_embeddings(len(NEW), seed=22)

    results = {}
    for batch_rows in (65_536, 7):
        cfg = make_config(tmp_path / str(batch_rows),
                          feast={"project": f"stream{batch_rows}_{online}", "batch_rows": batch_rows, **extra})
        _write_day(spark, cfg, D1, OLD, emb1)
        _write_day(spark, cfg, D2, NEW, emb2)
        publish.publish(cfg, D1)
        res = publish.publish(cfg, D2)
        checked = check_stage.check(cfg, D2)
        online_rows = feast_repo.lookup(cfg, [{"user_id": k} for k in OLD + NEW[150:]])
        results[batch_rows] = res, checked, online_rows.sort_values("user_id").reset_index(drop=True)

    (whole, whole_check, whole_rows), (small, small_check, small_rows) = results[65_536], results[7]
    # the drift the gate reports is the mean cosine over the 150 common tasks, computed here directly
    common = [NEW.index(k) for k in OLD[50:]]
    a, b = emb2[common].astype(np.float64), emb1[50:].astype(np.float64)
    cosine = ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()
    for res in (whole, small):
        g = res.gate
        assert (res.rows, g.rows, g.prev_rows, g.common_keys, g.nan_inf_rows) == (len(NEW), len(NEW), N, 150, 0)
        assert g.mean_drift == pytest.approx(1 - cosine, abs=1e-9)
        assert g.mean_norm == pytest.approx(np.linalg.norm(emb2.astype(np.float64), axis=1).mean(), rel=1e-9)
    assert whole_check == small_check and whole_check["rows"] == len(NEW) and whole_check["sampled_lookups"] == 20
    # the online store serves day 2 alone: its tasks serve day 2, the 50 that left have no row
    assert small_rows.equals(whole_rows)
    served = dict(zip(small_rows.user_id, small_rows.embedding))
    np.testing.assert_array_equal(np.asarray(served["n3"], np.float32), emb2[NEW.index("n3")])
    np.testing.assert_array_equal(np.asarray(served["u60"], np.float32), emb2[NEW.index("u60")])
    assert all(served[k] is None or np.isnan(served[k]).all() for k in OLD[:50])


def test_duplicate_keys_in_different_batches_are_refused(spark, tmp_path):
    cfg = make_config(tmp_path, feast={"batch_rows": 7})
    keys = OLD[:30] + OLD[:1]  # the duplicate lands in another batch than its twin
    write_meta_embeddings(spark, cfg, D1, keys, random_embeddings(len(keys), seed=3))
    with pytest.raises(day.PublishError, match=f"duplicate task keys on {D1} \\(1\\)"):
        publish.write_partition(cfg, D1, "fast", store=feast_repo.apply(cfg))


def test_keys_of_several_columns_match_and_repeat_exactly():
    import pyarrow as pa

    table = pa.table({"user_id": ["a:1", "a", "a", "b"], "kind": ["b", "1:b", "1:b", "x"]})
    joined = day.key_column(table, ["user_id", "kind"]).to_pylist()
    assert joined[0] != joined[1] and joined[1] == joined[2]  # "a:1"+"b" is not "a"+"1:b"
    assert day.duplicate_keys(table, ["user_id", "kind"]) == 1
    assert day.duplicate_keys(table, ["user_id"]) == 1
    assert day.duplicate_keys(table.slice(0, 1), ["user_id"]) == 0
