"""The day into Feast's Redis online store, in Feast's layout: one hash per entity (key = entity
key + project), fields = the event timestamp and one per feature."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from core import tables
from core.config import Config
from pipelines.faults import kill_point
from serving.day import PublishError
from serving.feast_repo import ENTITY_KEY_SERIALIZATION_VERSION
from serving.online.encode import EncodedBatch


@dataclass
class RedisLayout:
    """Feast's Redis layout of the feature view: one hash per entity, key = entity key +
    project, fields = the event timestamp and one per feature (mmh3 of "<view>:<feature>")."""
    client: Any  # redis.Redis, Feast's client for this store
    project: bytes
    ts_field: bytes
    fields: dict[str, bytes]  # feature name -> hash field


def redis_layout(store) -> RedisLayout:
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    fv = store.get_feature_view(tables.FEATURE_VIEW)
    fv_name = _versioned_fv_name(fv, config)
    return RedisLayout(client=store._get_provider().online_store._get_client(config.online_store),
                       project=config.project.encode(), ts_field=f"_ts:{fv_name}".encode(),
                       fields={f.name: _mmh3(f"{fv_name}:{f.name}") for f in fv.features})


@dataclass
class RedisRows:
    """One encoded batch as Feast's Redis store lays it out (RedisLayout)."""
    layout: RedisLayout
    keys: list[bytes]
    ts_values: list[bytes]  # serialized Timestamp per row
    columns: list[list[bytes]]  # per layout field, the serialized ValueProto per row

    def hset_args(self, i: int) -> list[bytes]:
        args = [self.keys[i], self.layout.ts_field, self.ts_values[i]]
        for field_, col in zip(self.layout.fields.values(), self.columns):
            args += (field_, col[i])
        return args


def redis_rows(layout: RedisLayout, enc: EncodedBatch) -> RedisRows:
    from google.protobuf.timestamp_pb2 import Timestamp

    def ts_bytes(t: datetime) -> bytes:
        ts = Timestamp()
        ts.FromDatetime(t.replace(tzinfo=timezone.utc))
        return ts.SerializeToString()

    ts_by_value = {t: ts_bytes(t) for t in set(enc.event_ts)}
    return RedisRows(layout=layout, keys=[k + layout.project for k in enc.entity_keys],
                     ts_values=[ts_by_value[t] for t in enc.event_ts],
                     columns=[enc.values[name] for name in layout.fields])


def _resp_bulk(b: bytes) -> bytes:
    """One RESP bulk string (Redis protocol)."""
    return b"$%d\r\n%b\r\n" % (len(b), b)


def _project_entity_keys(cfg: Config, layout: RedisLayout) -> Iterator[bytes]:
    """Every Redis key of this project's tasks (SCAN, streamed). A key is Feast's entity
    key + project name; it is decoded whole, so a key of another project whose name ends
    like this one's is never taken."""
    from feast.infra.key_encoding_utils import deserialize_entity_key

    project, join_keys = layout.project, sorted(cfg.data.task_key)
    pattern = b"*" + b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in project)
    for key in layout.client.scan_iter(match=pattern, count=1000):
        try:
            entity = deserialize_entity_key(key[: len(key) - len(project)], ENTITY_KEY_SERIALIZATION_VERSION)
        except (ValueError, struct.error, UnicodeDecodeError):
            continue
        if list(entity.join_keys) == join_keys and len(entity.entity_values) == len(join_keys):
            yield key


def write_day(store, cfg: Config, encoded: Iterable[EncodedBatch], replace_all: bool = False) -> None:
    """One MULTI/EXEC for the whole day, fed batch by batch (encoded): Redis applies all of
    it or (killed client) none. replace_all (a version switch): the same transaction first
    removes the feature view's fields from every task of the project (their hashes vanish),
    then sets the day's rows.

    The HSETs are packed here as RESP rather than sent through redis-py's
    `pipeline(transaction=True)` (the same MULTI/EXEC): the library made the whole publish of
    a 100k-row day 1.3x-1.6x slower, median 5.29 s against 3.26 s over 8 interleaved repeats
    (`metaemb bench publish --rows 100000 --online-store redis` runs both; docs/benchmarks.md).
    """
    layout = redis_layout(store)
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(layout.fields)))
    ts_field, fields = _resp_bulk(layout.ts_field), [_resp_bulk(f) for f in layout.fields.values()]

    def packed(rows: RedisRows, lo: int, hi: int) -> bytes:
        ts_resp = {v: _resp_bulk(v) for v in set(rows.ts_values[lo:hi])}
        out = []
        for i in range(lo, hi):
            out += [head, _resp_bulk(rows.keys[i]), ts_field, ts_resp[rows.ts_values[i]]]
            for field_, col in zip(fields, rows.columns):
                out += (field_, _resp_bulk(col[i]))
        return b"".join(out)

    # MULTI, the day's HSETs streamed in chunks, EXEC -- on one connection. Redis queues
    # the commands and runs them only at EXEC, atomically; if this process dies before
    # EXEC reaches the server, the connection drops and Redis discards the whole queue.
    conn = layout.client.connection_pool.get_connection()
    queued, chunk, paused = 0, 5000, False
    try:
        conn.send_command("MULTI")
        if replace_all:  # SCAN runs on another connection: it sees the store before this transaction
            for key in _project_entity_keys(cfg, layout):
                conn.send_command("HDEL", key, layout.ts_field, *layout.fields.values())
                queued += 1
        for enc in encoded:
            rows = redis_rows(layout, enc)
            for lo in range(0, enc.rows, chunk):
                conn.send_packed_command([packed(rows, lo, min(lo + chunk, enc.rows))], check_health=False)
                if not paused:
                    paused = True
                    kill_point("redis:mid-multi")
            queued += enc.rows
        conn.send_command("EXEC")
        first = conn.read_response()
        if first not in (b"OK", "OK", True):
            raise PublishError(f"redis MULTI failed: {first!r}")
        for _ in range(queued):
            reply = conn.read_response()  # QUEUED (an error here aborts the EXEC)
            if isinstance(reply, Exception):
                raise PublishError(f"redis refused a queued command: {reply}")
        result = conn.read_response()
        if result is None or isinstance(result, Exception):
            raise PublishError(f"redis EXEC failed: {result!r}")
        errors = [r for r in result if isinstance(r, Exception)]
        if errors:
            raise PublishError(f"redis EXEC: {len(errors)} commands failed, first: {errors[0]}")
    except BaseException:
        conn.disconnect()  # never hand a connection with a half-sent MULTI back to the pool
        raise
    finally:
        layout.client.connection_pool.release(conn)
