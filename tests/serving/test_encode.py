"""The bulk encoding of a day's rows is byte for byte what Feast's own serializers write, for
one and for several key columns, odd values included (no Spark, no server)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from core import config as config_mod
from core import tables
from serving.online import encode

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("keys", [["user_id"], ["user_id", "kind"]])
def test_bulk_encoding_is_feasts(keys):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    cfg = config_mod.from_dict({"data": {"task_key": keys}, "model": {"embedding_dim": 4}}, source="<test>")
    values = ["u1", "", "é-ü", "x" * 300, "42"]
    n = len(values)
    emb = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    ts = pa.array([datetime(2026, 1, 2, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC"))
    table = pa.table({**{k: [f"{v}{i}" for v in values] for i, k in enumerate(keys)},
                      tables.EMBEDDING: list(emb), tables.N_SAMPLES: pa.array([1, 0, 64, 300, -1], pa.int32()),
                      tables.MODEL_VERSION: ["abc", "", "é" * 20, "v", "abc"],
                      tables.EVENT_TIMESTAMP: ts, tables.CREATED_TIMESTAMP: ts})
    got = encode.encode_batch(encode.encoding(cfg), table)
    for i in range(n):
        key = EntityKey(join_keys=keys, entity_values=[Value(string_val=f"{values[i]}{j}") for j in range(len(keys))])
        assert got.entity_keys[i] == serialize_entity_key(key, entity_key_serialization_version=3)
        assert got.values[tables.EMBEDDING][i] == Value(float_list_val=FloatList(val=emb[i].tolist())).SerializeToString()
        assert got.values[tables.N_SAMPLES][i] == Value(int32_val=int(table[tables.N_SAMPLES][i].as_py())).SerializeToString()
        assert got.values[tables.MODEL_VERSION][i] == Value(string_val=table[tables.MODEL_VERSION][i].as_py()).SerializeToString()
