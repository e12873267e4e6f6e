"""publish's bulk write from the Spark executors ([feast] write_from = "spark"): each task
writes its part of the day on a connection of its own, on a real Redis and a Redis Cluster, and
readers get exactly what the driver-only path gives them, version switch included."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from core import tables
from metaemb.daily import run_stage
from pipelines.lake import day_files
from project_helpers import make_config, online_store_config
from serving import feast_repo, slots
from serving_helpers import random_embeddings, write_meta_embeddings

pytestmark = [pytest.mark.spark, pytest.mark.services]

D1, D2 = date(2026, 5, 1), date(2026, 5, 2)
N = 500


def lookups(cfg, keys):
    return feast_repo.lookup(cfg, [{"user_id": k} for k in keys]).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("online", ["redis", "redis_cluster"])
def test_executor_writes_serve_what_the_driver_path_serves(spark, tmp_path, online, request, caplog):
    lake = {"storage_root": str(tmp_path / "lake")}
    store = online_store_config(online, request)
    spark_cfg = make_config(tmp_path / "spark", pipeline=lake, feast={"project": f"ex_{online}", "write_from": "spark",
                                                                       "write_batch_rows": 64, **store})
    driver_cfg = make_config(tmp_path / "driver", pipeline=lake, feast={"project": f"dr_{online}", **store})
    keys = [f"u{i}" for i in range(N)]
    write_meta_embeddings(spark, spark_cfg, D1, keys, random_embeddings(N, seed=41), model_version="v1")
    write_meta_embeddings(spark, spark_cfg, D2, keys[:300], random_embeddings(300, seed=42), model_version="v2")
    assert len(day_files(spark_cfg, tables.META_EMBEDDINGS, D1, ["user_id"]).paths) >= 2, "the test needs two tasks"
    for day in (D1, D2):
        for cfg in (spark_cfg, driver_cfg):
            with caplog.at_level("INFO", logger="metaemb.daily"):
                result = run_stage(spark, cfg, "publish", day, None)
            assert result["rows"] == (N if day == D1 else 300), result
        got, want = lookups(spark_cfg, keys + ["missing"]), lookups(driver_cfg, keys + ["missing"])
        assert got.equals(want)
        assert set(got.model_version.dropna()) == {"v1" if day == D1 else "v2"}
    assert got.embedding.isna().sum() == N - 300 + 1  # the version switch left no row of v1
    u7 = got[got.user_id == "u7"].embedding.iloc[0]
    np.testing.assert_array_equal(np.asarray(u7, np.float32), random_embeddings(300, seed=42)[7])
    assert slots.served_day(feast_repo.feature_store(spark_cfg)) == D2
    assert "through Spark's read" not in caplog.text  # the tasks read their files with delta-rs


def test_a_day_only_spark_reads_goes_to_the_executors_through_spark(spark, tmp_path, redis_server, caplog):
    """meta_embeddings with deletion vectors: delta-rs refuses the table, so the tasks get the rows
    from Spark's read (mapInArrow) and the readers get the same as from the driver path."""
    lake = {"storage_root": str(tmp_path / "lake")}
    store = {"online_store": "redis", "redis_connection": redis_server}
    spark_cfg = make_config(tmp_path / "spark", pipeline=lake, feast={"project": "ex_dv", "write_from": "spark", **store})
    driver_cfg = make_config(tmp_path / "driver", pipeline=lake, feast={"project": "dr_dv", **store})
    keys = [f"u{i}" for i in range(N)]
    write_meta_embeddings(spark, spark_cfg, D1, keys, random_embeddings(N, seed=43), model_version="v1")
    path = spark_cfg.table_location(tables.META_EMBEDDINGS)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    spark.sql(f"DELETE FROM delta.`{path}` WHERE user_id = 'u3'")
    with caplog.at_level("INFO", logger="metaemb.daily"):
        results = [run_stage(spark, cfg, "publish", D1, None) for cfg in (spark_cfg, driver_cfg)]
    assert [r["rows"] for r in results] == [N - 1, N - 1]
    assert "the executors get the day through Spark's read" in caplog.text
    got, want = lookups(spark_cfg, keys), lookups(driver_cfg, keys)
    assert got.equals(want) and got.embedding.isna().sum() == 1
