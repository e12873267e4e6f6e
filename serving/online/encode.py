"""A day's Arrow batches -> Feast's online-store records, serialized in bulk (no per-row protos):
entity keys as serialize_entity_key writes them, ValueProto bytes per feature, and the
timestamps Feast's stores take.

encoding(cfg) reads the formats off Feast once (the entity key's head and value tag, the
ValueProto field tags, the embedding proto's prefix) and checks them against Feast's own
serializers on probe values; encode_batch applies them without importing Feast. That matters on
Spark executors: `import feast` took 7.3 s in a fresh Python process on the 2-core box
(`python -c "import feast.protos.feast.types.Value_pb2"`, twice, idle), which every Python
worker writing its part of the day would pay again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

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


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # protobuf writes a negative int32 as its 64-bit two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass(frozen=True)
class Encoding:
    """Feast's formats for this config's rows, read off Feast once (encoding())."""
    keys: tuple[str, ...]  # the task key columns
    dim: int
    key_head: bytes  # every entity key starts so: the key count and the sorted key names
    string_tag: bytes  # an entity key value's type tag (STRING)
    embedding_prefix: bytes  # ValueProto(float_list_val=dim floats) before the packed floats
    int32_tag: bytes  # ValueProto wire tags of int32_val and string_val
    string_val_tag: bytes

    def entity_keys(self, values_per_key: list[list[str]]) -> list[bytes]:
        order = sorted(range(len(self.keys)), key=lambda i: self.keys[i])
        cols = [values_per_key[i] for i in order]
        head, tag = self.key_head, self.string_tag
        if len(cols) == 1:
            return [b"".join((head, tag, struct.pack("<I", len(e)), e)) for e in (v.encode() for v in cols[0])]
        out = []
        for vals in zip(*cols):
            parts = [head]
            for v in vals:
                e = v.encode()
                parts += [tag, struct.pack("<I", len(e)), e]
            out.append(b"".join(parts))
        return out

    def int32_value(self, v) -> bytes:
        return b"" if v is None else self.int32_tag + _varint(int(v))

    def string_value(self, v) -> bytes:
        if v is None:
            return b""
        e = v.encode()
        return self.string_val_tag + _varint(len(e)) + e


def entity_key_head(key_names: list[str], string_tag: bytes | None = None) -> bytes:
    """What every entity key of these string join keys starts with (format v3): the key count
    and the sorted key names; the values follow, each tag + length + bytes."""
    if string_tag is None:
        from feast.protos.feast.types.Value_pb2 import ValueType

        string_tag = struct.pack("<I", ValueType.STRING)
    head = [struct.pack("<I", len(key_names))]
    for k in sorted(key_names):
        head += [string_tag, struct.pack("<I", len(k.encode())), k.encode()]
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


def encoding(cfg: Config) -> Encoding:
    """Feast's formats for cfg's rows, checked against Feast's serializers on probe values: a
    Feast upgrade that changed one is refused here rather than written as garbage."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import FloatList, Value as ValueProto, ValueType

    fields = ValueProto.DESCRIPTOR.fields_by_name
    keys, dim = tuple(cfg.data.task_key), cfg.model.embedding_dim
    string_tag = struct.pack("<I", ValueType.STRING)
    probe = ValueProto(float_list_val=FloatList(val=[1.0] * dim)).SerializeToString()
    enc = Encoding(keys=keys, dim=dim, key_head=entity_key_head(list(keys), string_tag), string_tag=string_tag,
                   embedding_prefix=probe[: len(probe) - 4 * dim],
                   int32_tag=_varint(fields["int32_val"].number << 3 | 0),
                   string_val_tag=_varint(fields["string_val"].number << 3 | 2))
    if probe[len(enc.embedding_prefix):] != np.ones(dim, "<f4").tobytes():
        raise PublishError("Feast's float list encoding is not a prefix and the packed floats")
    for values in (["x"] * len(keys), [f"k{i}é" * (i + 1) for i in range(len(keys))]):
        ref = serialize_entity_key(EntityKeyProto(join_keys=list(keys), entity_values=[ValueProto(string_val=v)
                                                                                        for v in values]),
                                   entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION)
        if enc.entity_keys([[v] for v in values])[0] != ref:
            raise PublishError("bulk entity-key encoding differs from Feast's serialize_entity_key")
    for v in (0, 1, 127, 128, 300, 2**31 - 1, -1, None):
        if enc.int32_value(v) != (ValueProto(int32_val=v) if v is not None else ValueProto()).SerializeToString():
            raise PublishError(f"bulk int32 value encoding differs from Feast's ValueProto for {v}")
    for v in ("", "a1b2c3d4e5f6", "é" * 200, None):
        if enc.string_value(v) != (ValueProto(string_val=v) if v is not None else ValueProto()).SerializeToString():
            raise PublishError(f"bulk string value encoding differs from Feast's ValueProto for {v!r}")
    return enc


def _small(values: list, make) -> tuple[list[bytes], list]:
    """A small-cardinality column: its value bytes and value_text, one encoding per distinct value."""
    cache: dict = {}
    out_b, out_t = [], []
    for v in values:
        hit = cache.get(v)
        if hit is None:
            hit = cache[v] = (make(v), None if v is None else str(v))
        out_b.append(hit[0])
        out_t.append(hit[1])
    return out_b, out_t


def _naive_utc(col) -> list:
    # Spark's Arrow output is timestamp[us, UTC]; its Parquet files may hold INT96
    # (timestamp[ns], no zone) -- both are UTC instants
    micros = col.cast(pa.timestamp("us", tz=getattr(col.type, "tz", None))).cast(pa.int64())
    micros = micros.to_numpy(zero_copy_only=False)
    if col.null_count:
        raise PublishError(f"meta_embeddings: null timestamps in {col}")
    uniq, inverse = np.unique(micros, return_inverse=True)
    objs = [datetime(1970, 1, 1) + timedelta(microseconds=int(u)) for u in uniq]
    return [objs[i] for i in inverse]


def encode_batch(enc: Encoding, table) -> EncodedBatch:
    """Arrow rows (a batch of a day) -> Feast online-store records, serialized in bulk (no
    per-row protos, no Feast). Keys unique across the day: check_keys."""
    import pyarrow.compute as pc

    n = table.num_rows
    key_values = []
    for k in enc.keys:
        col = table.column(k)
        if col.null_count:
            raise PublishError(f"meta_embeddings: {col.null_count} rows with null key {k!r}")
        key_values.append(col.cast(pa.string()).to_pylist())
    entity_keys = enc.entity_keys(key_values)

    # embedding: list<float> -> (n, dim) float32 -> ValueProto(float_list_val) bytes, whose
    # encoding is a constant prefix + the packed little-endian floats.
    dim, prefix = enc.dim, enc.embedding_prefix
    emb_col = table.column(tables.EMBEDDING).combine_chunks()
    if emb_col.null_count:
        raise PublishError(f"meta_embeddings: {emb_col.null_count} rows with a null embedding")
    lengths = pc.list_value_length(emb_col).to_numpy(zero_copy_only=False)
    if n and (lengths != dim).any():
        bad = int((lengths != dim).sum())
        raise PublishError(f"meta_embeddings: {bad} embeddings are not {dim} long (model.embedding_dim)")
    flat = pc.list_flatten(emb_col).cast(pa.float32()).to_numpy(zero_copy_only=False)
    emb = np.ascontiguousarray(flat, dtype="<f4").reshape(n, dim)
    width = len(prefix) + 4 * dim
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = emb.view(np.uint8).reshape(n, 4 * dim)
    blob = buf.tobytes()
    emb_bytes = [blob[i: i + width] for i in range(0, n * width, width)]

    ns_b, ns_t = _small(table.column(tables.N_SAMPLES).to_pylist(), enc.int32_value)
    mv_b, mv_t = _small(table.column(tables.MODEL_VERSION).to_pylist(), enc.string_value)
    event_ts = _naive_utc(table.column(tables.EVENT_TIMESTAMP).combine_chunks())
    created = table.column(tables.CREATED_TIMESTAMP).combine_chunks()
    created_ts = _naive_utc(created) if created.null_count == 0 else [None] * n
    return EncodedBatch(
        rows=n, entity_keys=entity_keys,
        values={tables.EMBEDDING: emb_bytes, tables.N_SAMPLES: ns_b, tables.MODEL_VERSION: mv_b},
        value_text={tables.EMBEDDING: [None] * n, tables.N_SAMPLES: ns_t, tables.MODEL_VERSION: mv_t},
        event_ts=event_ts, created_ts=created_ts,
    )
