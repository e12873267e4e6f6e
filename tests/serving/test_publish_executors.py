"""publish's bulk write from the Spark executors ([feast] write_from = "spark"): each task
writes its part of the day on a connection of its own, on a real Redis and a Redis Cluster, and
readers get exactly what the driver-only path gives them, version switch included."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from metaemb.daily import run_stage
from project_helpers import make_config, online_store_config
from serving import feast_repo, slots
from serving_helpers import random_embeddings, write_meta_embeddings

pytestmark = [pytest.mark.spark, pytest.mark.services]

D1, D2 = date(2026, 5, 1), date(2026, 5, 2)
N = 500


def lookups(cfg, keys):
    return feast_repo.lookup(cfg, [{"user_id": k} for k in keys]).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("online", ["redis", "redis_cluster"])
def test_executor_writes_serve_what_the_driver_path_serves(spark, tmp_path, online, request):
    lake = {"storage_root": str(tmp_path / "lake")}
    store = online_store_config(online, request)
    spark_cfg = make_config(tmp_path / "spark", pipeline=lake, feast={"project": f"ex_{online}", "write_from": "spark",
                                                                       "write_batch_rows": 64, **store})
    driver_cfg = make_config(tmp_path / "driver", pipeline=lake, feast={"project": f"dr_{online}", **store})
    keys = [f"u{i}" for i in range(N)]
    write_meta_embeddings(spark, spark_cfg, D1, keys, random_embeddings(N, seed=41), model_version="v1")
    write_meta_embeddings(spark, spark_cfg, D2, keys[:300], random_embeddings(300, seed=42), model_version="v2")
    for day in (D1, D2):
        for cfg in (spark_cfg, driver_cfg):
            result = run_stage(spark, cfg, "publish", day, None)
            assert result["rows"] == (N if day == D1 else 300), result
        got, want = lookups(spark_cfg, keys + ["missing"]), lookups(driver_cfg, keys + ["missing"])
        assert got.equals(want)
        assert set(got.model_version.dropna()) == {"v1" if day == D1 else "v2"}
    assert got.embedding.isna().sum() == N - 300 + 1  # the version switch left no row of v1
    u7 = got[got.user_id == "u7"].embedding.iloc[0]
    np.testing.assert_array_equal(np.asarray(u7, np.float32), random_embeddings(300, seed=42)[7])
    assert slots.served_day(feast_repo.feature_store(spark_cfg)) == D2
