"""The day into Feast's Redis online store (a single server or a Redis Cluster), in Feast's
layout: one hash per task (key = Feast's entity key + project), and per feature view a field for
the event timestamp and one per feature (mmh3 of "<view>:<feature>").

Each of the two feature views (serving/slots.py) is a Namespace: its own fields in every task's
hash. A day is written into the namespace no reader looks at, as pipelines of [feast]
write_batch_rows HSETs without a transaction: Redis serves other clients between the reads of
a pipeline, so a reader waits for a few commands at most, never for the day (a MULTI/EXEC runs
whole, serving nobody else). A namespace is removed by HDEL of its fields over a SCAN, in the
same batches. A marker key per namespace says it may hold rows (set before the first write,
deleted after a clean), so a publish killed half way is cleaned up by the next one.

In a cluster every command goes to the node of its key's slot: one pipeline per node and batch,
and no command spans two keys, so nothing needs a cross-slot transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from core.config import Config
from pipelines.faults import kill_point
from serving.day import PublishError
from serving.feast_repo import redis_connection_string
from serving.online.encode import EncodedBatch, Encoding, encode_batch, entity_key_head, is_entity_key

if TYPE_CHECKING:
    from pipelines.lake import DayFiles


@dataclass(frozen=True)
class Namespace:
    """One feature view's fields in every task's hash."""
    view: str
    project: bytes
    ts_field: bytes
    fields: dict[str, bytes]  # feature name -> hash field

    @property
    def all_fields(self) -> list[bytes]:
        return [self.ts_field, *self.fields.values()]

    @property
    def marker(self) -> bytes:
        """A key no reader reads: present while the namespace may hold rows."""
        return b"metaemb:" + self.project + b":holds:" + self.view.encode()


def namespace(store, view: str) -> Namespace:
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    fv = store.get_feature_view(view)
    name = _versioned_fv_name(fv, store.config)
    return Namespace(view=view, project=store.config.project.encode(), ts_field=f"_ts:{name}".encode(),
                     fields={f.name: _mmh3(f"{name}:{f.name}") for f in fv.features})


@dataclass(frozen=True)
class Target:
    """Where to connect: the connection string Feast's store reads, parsed by Feast (target());
    a client is made from it without Feast (a Spark executor's Python worker need not import it)."""
    nodes: tuple[tuple[str, int], ...]
    options: dict
    cluster: bool

    def client(self):
        """A client of its own: redis.Redis, or redis.cluster.RedisCluster."""
        from redis import Redis
        from redis.cluster import ClusterNode, RedisCluster

        if self.cluster:
            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.nodes], **self.options)
        (host, port), = self.nodes[:1]
        return Redis(host=host, port=port, **self.options)


def target(cfg: Config) -> Target:
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, options = RedisOnlineStore._parse_connection_string(redis_connection_string(cfg))
    return Target(tuple((n["host"], int(n["port"])) for n in nodes), options, cfg.feast.redis_type == "redis_cluster")


def connect(cfg: Config):
    return target(cfg).client()


def holds(client, ns: Namespace) -> bool:
    return bool(client.exists(ns.marker))


def mark(client, ns: Namespace, what: str) -> None:
    client.set(ns.marker, what.encode())


@dataclass
class RedisRows:
    """One encoded batch as the namespace lays it out."""
    keys: list[bytes]
    ts_values: list[bytes]  # serialized Timestamp per row
    columns: list[list[bytes]]  # per namespace field, the serialized ValueProto per row


def redis_rows(ns: Namespace, enc: EncodedBatch) -> RedisRows:
    from google.protobuf.timestamp_pb2 import Timestamp

    def ts_bytes(t: datetime) -> bytes:
        ts = Timestamp()
        ts.FromDatetime(t.replace(tzinfo=timezone.utc))
        return ts.SerializeToString()

    ts_by_value = {t: ts_bytes(t) for t in set(enc.event_ts)}
    return RedisRows(keys=[k + ns.project for k in enc.entity_keys], ts_values=[ts_by_value[t] for t in enc.event_ts],
                     columns=[enc.values[name] for name in ns.fields])


def _resp_bulk(b: bytes) -> bytes:
    """One RESP bulk string (Redis protocol)."""
    return b"$%d\r\n%b\r\n" % (len(b), b)


def packed_hsets(ns: Namespace, rows: RedisRows, idx: Iterable[int]) -> bytes:
    """HSET key ts_field ts field value ... for rows idx, packed as RESP in one buffer: the
    commands redis-py's pipeline would send, built in bulk (see write_day)."""
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(ns.fields)))
    ts_field, fields = _resp_bulk(ns.ts_field), [_resp_bulk(f) for f in ns.fields.values()]
    ts_resp: dict[bytes, bytes] = {}
    out = []
    for i in idx:
        ts = rows.ts_values[i]
        t = ts_resp.get(ts) or ts_resp.setdefault(ts, _resp_bulk(ts))
        out += [head, _resp_bulk(rows.keys[i]), ts_field, t]
        for field_, col in zip(fields, rows.columns):
            out += (field_, _resp_bulk(col[i]))
    return b"".join(out)


def _packed_hdels(ns: Namespace, keys: list[bytes]) -> bytes:
    head = b"*%d\r\n$4\r\nHDEL\r\n" % (2 + len(ns.all_fields))
    fields = b"".join(_resp_bulk(f) for f in ns.all_fields)
    return b"".join(head + _resp_bulk(k) + fields for k in keys)


def _node_clients(client, keys: list[bytes]) -> Iterator[tuple[Any, list[int]]]:
    """(the client of a node, the positions of its keys): one node for a single server."""
    if not hasattr(client, "get_node_from_key"):
        yield client, list(range(len(keys)))
        return
    by_node: dict[str, list[int]] = {}
    nodes = {}
    for i, key in enumerate(keys):
        node = client.get_node_from_key(key)
        by_node.setdefault(node.name, []).append(i)
        nodes[node.name] = node
    for name, idx in by_node.items():
        yield client.get_redis_connection(nodes[name]), idx


class _Pipelines:
    """One connection per node, and on each at most one batch of commands whose replies are not
    read yet: the client packs the next batch while the server runs the last one."""

    def __init__(self):
        self.conns: dict[int, tuple[Any, Any]] = {}  # id(node client) -> (its pool, connection)
        self.pending: dict[int, int] = {}

    def send(self, node_client, packed: bytes, replies: int) -> None:
        key = id(node_client)
        if key not in self.conns:
            pool = node_client.connection_pool
            self.conns[key] = (pool, pool.get_connection())
        conn = self.conns[key][1]
        conn.send_packed_command([packed], check_health=False)
        self._read(key)
        self.pending[key] = replies

    def _read(self, key: int) -> None:
        conn = self.conns[key][1]
        for _ in range(self.pending.pop(key, 0)):
            conn.read_response()

    def finish(self) -> None:
        for key in list(self.pending):
            self._read(key)

    def close(self, failed: bool) -> None:
        for pool, conn in self.conns.values():
            if failed:
                conn.disconnect()  # never hand a connection with unread replies back to the pool
            pool.release(conn)


def _pipelined(run) -> None:
    """Run run(pipelines), turning a refused command into a PublishError."""
    from redis.exceptions import RedisError

    pipes = _Pipelines()
    failed = True
    try:
        run(pipes)
        pipes.finish()
        failed = False
    except RedisError as e:
        raise PublishError(f"redis refused a command ({e}); nothing switched: rerun the publish") from e
    finally:
        pipes.close(failed)


def write_day(client, ns: Namespace, encoded: Iterable[EncodedBatch], batch_rows: int) -> int:
    """Write the encoded batches into ns, batch_rows HSETs per pipeline and node; the rows written.

    The HSETs are packed here as RESP rather than sent through redis-py's pipeline: the library
    made the whole publish of a 100k-row day 1.3x-1.6x slower, median 5.29 s against 3.26 s over
    8 interleaved repeats (`metaemb bench publish` runs both; docs/benchmarks.md)."""
    written = 0

    def run(pipes: _Pipelines) -> None:
        nonlocal written
        paused = False
        for enc in encoded:
            rows = redis_rows(ns, enc)
            for lo in range(0, enc.rows, batch_rows):
                span = list(range(lo, min(lo + batch_rows, enc.rows)))
                for node_client, idx in _node_clients(client, [rows.keys[i] for i in span]):
                    pipes.send(node_client, packed_hsets(ns, rows, [span[j] for j in idx]), len(idx))
                written += len(span)
                if not paused:
                    paused = True
                    pipes.finish()
                    kill_point("redis:mid-write")

    _pipelined(run)
    return written


def write_arrow_batches(where: Target, enc: Encoding, ns: Namespace, batch_rows: int, batches: Iterator) -> Iterator:
    """mapInArrow's function on a Spark executor: this task's rows of the day into ns, on a
    connection of its own; yields one batch with the count. Everything it is given was made on
    the driver: nothing here imports Feast."""
    import pyarrow as pa

    yield pa.RecordBatch.from_pydict({"rows": [_write_batches(where, enc, ns, batch_rows, batches)]})


def write_files(where: Target, enc: Encoding, ns: Namespace, batch_rows: int, day: DayFiles,
                paths: Iterator[str]) -> Iterator[int]:
    """mapPartitions' function on a Spark executor: the rows of this task's files of the day
    (read here with delta-rs) into ns, on a connection of its own; yields the count."""
    yield _write_batches(where, enc, ns, batch_rows, day.scan(list(paths)))


def _write_batches(where: Target, enc: Encoding, ns: Namespace, batch_rows: int, batches: Iterator) -> int:
    import pyarrow as pa

    client = where.client()
    try:
        return write_day(client, ns, (encode_batch(enc, pa.Table.from_batches([b])) for b in batches), batch_rows)
    finally:
        client.close()


def _glob_escaped(b: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in b)


# Buckets a SCAN call walks: the server runs one call whole (matching every key of those buckets
# against the pattern) while other clients wait, so calls are kept small.
SCAN_COUNT = 1000


def _project_keys(cfg: Config, node_client, project: bytes, count: int = SCAN_COUNT) -> Iterator[bytes]:
    """Every key of this project's tasks on one server (SCAN, streamed). A key is Feast's entity
    key + project name; it is checked whole (the key names, each value's length, the project
    after the last one), so a key of another project whose name ends like this one's is never
    taken."""
    keys = list(cfg.data.task_key)
    head = entity_key_head(keys)  # imports Feast: clean() runs on the driver
    for key in node_client.scan_iter(match=_glob_escaped(head) + b"*" + _glob_escaped(project), count=count):
        if is_entity_key(key, head, len(keys), project):
            yield key


def clean(cfg: Config, client, ns: Namespace, batch_rows: int) -> int:
    """Remove ns's fields from every task's hash (a hash left empty goes with them), batch_rows
    HDELs per pipeline, on each server of its own keys; then the marker. The keys touched."""
    servers = ([client.get_redis_connection(n) for n in client.get_primaries()]
               if hasattr(client, "get_primaries") else [client])
    touched = 0

    def run(pipes: _Pipelines) -> None:
        nonlocal touched
        paused = False
        for server in servers:
            batch: list[bytes] = []
            for key in _project_keys(cfg, server, ns.project):
                batch.append(key)
                if len(batch) == batch_rows:
                    pipes.send(server, _packed_hdels(ns, batch), len(batch))
                    touched += len(batch)
                    batch = []
                    if not paused:
                        paused = True
                        pipes.finish()
                        kill_point("redis:mid-clean")
            if batch:
                pipes.send(server, _packed_hdels(ns, batch), len(batch))
                touched += len(batch)

    _pipelined(run)
    client.delete(ns.marker)
    return touched
