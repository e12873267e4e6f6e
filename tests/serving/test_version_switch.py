"""A model version switch on the online store (SQLite and a real Redis, no Spark): every publish
serves its day alone, so after a switch no online row of the old version is left (tasks the new
day lacks have none), another project's rows are left alone, and the gate refuses a partition
that holds two model versions."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from core import tables
from serving import feast_repo
from serving import publish
from serving.gate import GateError, check_gate

from project_helpers import make_config, online_store_config
from serving_helpers import event_ts, random_embeddings

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
KEYS = [f"u{i}" for i in range(30)]


def day_table(keys, run_date: date, versions) -> pa.Table:
    n = len(keys)
    versions = versions if isinstance(versions, list) else [versions] * n
    ts = pa.array([event_ts(run_date)] * n, pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": keys, tables.EMBEDDING: list(random_embeddings(n, 8, seed=n)),
                     tables.N_SAMPLES: pa.array(np.full(n, 5), pa.int32()), tables.MODEL_VERSION: versions,
                     tables.EVENT_TIMESTAMP: ts, tables.CREATED_TIMESTAMP: ts})


def versions_online(cfg) -> dict:
    df = feast_repo.lookup(cfg, [{"user_id": k} for k in KEYS])
    return {r.user_id: (r.model_version if r.embedding is not None else None) for r in df.itertuples()}


@pytest.mark.parametrize("batch_rows", [65_536, 3])  # 3: the day and the evictions span many batches
@pytest.mark.parametrize("online", [pytest.param("sqlite", marks=pytest.mark.unit),
                                    pytest.param("redis", marks=pytest.mark.services),
                                    pytest.param("redis_cluster", marks=pytest.mark.services)])
def test_a_switch_leaves_only_the_new_versions_rows(tmp_path, online, batch_rows, request):
    def config(name, project):
        feast = {"project": project, "batch_rows": batch_rows, "write_batch_rows": batch_rows,
                 **online_store_config(online, request)}
        return make_config(tmp_path / name, model={"embedding_dim": 8}, feast=feast)

    cfg, neighbour = config("own", f"switch_{online}{batch_rows}"), config("other", f"x_switch_{online}{batch_rows}")
    for c in (cfg, neighbour):
        publish.write_partition(c, D1, "fast", store=feast_repo.apply(c), table=day_table(KEYS, D1, "v1"))
    publish.write_partition(cfg, D2, "fast", table=day_table(KEYS[:20], D2, "v2"))
    assert versions_online(cfg) == {k: "v2" if i < 20 else None for i, k in enumerate(KEYS)}
    assert set(versions_online(neighbour).values()) == {"v1"}  # a project whose name ends like ours


@pytest.mark.unit
def test_the_gate_refuses_a_partition_of_two_versions(tmp_path):
    cfg = make_config(tmp_path, model={"embedding_dim": 8})
    with pytest.raises(GateError, match=f"holds 2 model versions \\(v1, v2\\).*metaemb run --date {D1} --stages embed"):
        check_gate(cfg, D1, day_table(KEYS, D1, ["v1"] * 10 + ["v2"] * 20))
