"""A day's Arrow batches -> Feast's online-store records, serialized in bulk (no per-row protos):
entity keys as serialize_entity_key writes them (checked against Feast's on the first row),
ValueProto bytes per feature, and the timestamps Feast's stores take."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from core import tables
from core.config import Config
from serving.day import PublishError
from serving.feast_repo import ENTITY_KEY_SERIALIZATION_VERSION


@dataclass
class EncodedBatch:
    rows: int
    entity_keys: list[bytes]  # Feast's serialize_entity_key() bytes, one per row
    values: dict[str, list[bytes]]  # feature name -> serialized ValueProto, one per row
    value_text: dict[str, list]  # feature name -> value_text column (SQLite)
    event_ts: list[datetime]  # naive UTC, as Feast's stores receive them
    created_ts: list[datetime | None]


def _string_tag() -> bytes:
    from feast.protos.feast.types.Value_pb2 import ValueType

    return struct.pack("<I", ValueType.STRING)


def entity_key_head(key_names: list[str]) -> bytes:
    """What every entity key of these string join keys starts with (format v3): the key count
    and the sorted key names; the values follow, each tag + length + bytes."""
    tag = _string_tag()
    head = [struct.pack("<I", len(key_names))]
    for k in sorted(key_names):
        head += [tag, struct.pack("<I", len(k.encode())), k.encode()]
    return b"".join(head)


def is_entity_key(key: bytes, head: bytes, n_values: int, tail: bytes) -> bool:
    """Is `key` head + n_values string values + tail, exactly (no other project's key whose name
    ends like tail)?"""
    if not (key.startswith(head) and key.endswith(tail)):
        return False
    at, end = len(head), len(key) - len(tail)
    for _ in range(n_values):
        if at + 8 > end:
            return False
        at += 8 + struct.unpack_from("<I", key, at + 4)[0]
    return at == end


def _entity_key_encoder(key_names: list[str]):
    """Vectorizable serialize_entity_key for string keys (format v3), checked against Feast's."""
    order = sorted(range(len(key_names)), key=lambda i: key_names[i])
    head_b = entity_key_head(key_names)
    tag = _string_tag()

    def encode(values_per_key: list[list[str]]) -> list[bytes]:
        cols = [values_per_key[i] for i in order]
        if len(cols) == 1:
            return [b"".join((head_b, tag, struct.pack("<I", len(e)), e))
                    for e in (v.encode() for v in cols[0])]
        out = []
        for vals in zip(*cols):
            parts = [head_b]
            for v in vals:
                e = v.encode()
                parts += [tag, struct.pack("<I", len(e)), e]
            out.append(b"".join(parts))
        return out

    return encode


def _check_entity_key(key_names: list[str], values: list[str], encoded: bytes) -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    ref = serialize_entity_key(
        EntityKeyProto(join_keys=key_names, entity_values=[ValueProto(string_val=v) for v in values]),
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
    )
    if ref != encoded:  # a Feast upgrade changed the key format: refuse rather than write garbage
        raise PublishError("bulk entity-key encoding differs from Feast's serialize_entity_key")


def encode_batch(cfg: Config, table) -> EncodedBatch:
    """Arrow rows (a batch of a day) -> Feast online-store records, serialized in bulk (no
    per-row protos). Keys unique across the day: check_keys."""
    import pyarrow.compute as pc
    from feast.protos.feast.types.Value_pb2 import FloatList, Value as ValueProto

    n = table.num_rows
    keys = cfg.data.task_key
    dim = cfg.model.embedding_dim
    key_values = []
    for k in keys:
        col = table.column(k)
        if col.null_count:
            raise PublishError(f"meta_embeddings: {col.null_count} rows with null key {k!r}")
        key_values.append(col.cast(pa.string()).to_pylist())
    entity_keys = _entity_key_encoder(keys)(key_values)
    if n:
        _check_entity_key(keys, [kv[0] for kv in key_values], entity_keys[0])

    # embedding: list<float> -> (n, dim) float32 -> ValueProto(float_list_val) bytes, whose
    # encoding is a constant prefix + the packed little-endian floats.
    emb_col = table.column(tables.EMBEDDING).combine_chunks()
    if emb_col.null_count:
        raise PublishError(f"meta_embeddings: {emb_col.null_count} rows with a null embedding")
    lengths = pc.list_value_length(emb_col).to_numpy(zero_copy_only=False)
    if n and (lengths != dim).any():
        bad = int((lengths != dim).sum())
        raise PublishError(f"meta_embeddings: {bad} embeddings are not {dim} long (model.embedding_dim)")
    flat = pc.list_flatten(emb_col).cast(pa.float32()).to_numpy(zero_copy_only=False)
    emb = np.ascontiguousarray(flat, dtype="<f4").reshape(n, dim)
    probe = ValueProto(float_list_val=FloatList(val=[1.0] * dim)).SerializeToString()
    prefix = probe[: len(probe) - 4 * dim]
    assert probe[len(prefix):] == np.ones(dim, "<f4").tobytes()
    width = len(prefix) + 4 * dim
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = emb.view(np.uint8).reshape(n, 4 * dim)
    blob = buf.tobytes()
    emb_bytes = [blob[i: i + width] for i in range(0, n * width, width)]

    # small-cardinality columns: one proto per distinct value
    def encode_small(values, make):
        cache: dict[Any, tuple[bytes, Any]] = {}
        out_b, out_t = [], []
        for v in values:
            hit = cache.get(v)
            if hit is None:
                proto = make(v)
                text = proto.string_val if proto.WhichOneof("val") == "string_val" else (
                    str(v) if v is not None else None)
                hit = cache[v] = (proto.SerializeToString(), text)
            out_b.append(hit[0])
            out_t.append(hit[1])
        return out_b, out_t

    ns_b, ns_t = encode_small(table.column(tables.N_SAMPLES).to_pylist(),
                              lambda v: ValueProto(int32_val=int(v)) if v is not None else ValueProto())
    mv_b, mv_t = encode_small(table.column(tables.MODEL_VERSION).to_pylist(),
                              lambda v: ValueProto(string_val=v) if v is not None else ValueProto())

    def naive_utc(col) -> list:
        # Spark's Arrow output is timestamp[us, UTC]; its Parquet files may hold INT96
        # (timestamp[ns], no zone) -- both are UTC instants
        micros = col.cast(pa.timestamp("us", tz=getattr(col.type, "tz", None))).cast(pa.int64())
        micros = micros.to_numpy(zero_copy_only=False)
        if col.null_count:
            raise PublishError(f"meta_embeddings: null timestamps in {col}")
        uniq, inverse = np.unique(micros, return_inverse=True)
        objs = [datetime(1970, 1, 1) + timedelta(microseconds=int(u)) for u in uniq]
        return [objs[i] for i in inverse]

    event_ts = naive_utc(table.column(tables.EVENT_TIMESTAMP).combine_chunks())
    created = table.column(tables.CREATED_TIMESTAMP).combine_chunks()
    created_ts = naive_utc(created) if created.null_count == 0 else [None] * n
    return EncodedBatch(
        rows=n, entity_keys=entity_keys,
        values={tables.EMBEDDING: emb_bytes, tables.N_SAMPLES: ns_b, tables.MODEL_VERSION: mv_b},
        value_text={tables.EMBEDDING: [None] * n, tables.N_SAMPLES: ns_t, tables.MODEL_VERSION: mv_t},
        event_ts=event_ts, created_ts=created_ts,
    )
