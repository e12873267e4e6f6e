"""What `metaemb bench publish` watches while a path publishes: a reader in a process of its own
(its lookup latencies and the store's memory, sampled all through the run) and the CPU the
machine and the Redis servers use."""

from __future__ import annotations

import multiprocessing
import os
import time
from datetime import datetime, timezone

import numpy as np

from core import tables
from core.config import Config
from serving.online import redis as redis_store

READ_EVERY_S = 0.002
READER_NICE = -10  # the reader's priority over the writer and the server (needs root; else it stays 0)


def _read_loop(kind: str, target: dict, stop, out) -> None:
    """In a process of its own: read one task at a time every READ_EVERY_S until `stop`; send
    (times, latencies_ms, memory_times, memory_bytes) back through `out`."""
    rng = np.random.default_rng(0)
    times, lat, mem_t, mem = [], [], [], []
    try:  # a production store's readers are other machines: here the reader goes first on the CPUs
        os.nice(READER_NICE)
        raised = True
    except PermissionError:
        raised = False
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(target["path"], check_same_thread=False)
        sql = " UNION ALL ".join(f"SELECT value FROM {t} WHERE entity_key = ?" for t in target["tables"])
        keys = target["keys"]

        def read(key):
            con.execute(sql, [key] * len(target["tables"])).fetchall()

        def memory():
            return os.path.getsize(target["path"])
    else:
        from redis import Redis
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [n.split(":") for n in target["nodes"]]
        client = (RedisCluster(startup_nodes=[ClusterNode(h, int(p)) for h, p in nodes]) if target["cluster"]
                  else Redis(host=nodes[0][0], port=int(nodes[0][1])))
        servers = [Redis(host=h, port=int(p)) for h, p in nodes]
        keys, fields = target["keys"], target["fields"]

        def read(key):
            client.hmget(key, fields)

        def memory():
            return sum(int(s.info("memory")["used_memory"]) for s in servers)
    next_memory = 0.0
    while not stop.is_set():
        key = keys[int(rng.integers(len(keys)))]
        t0 = time.perf_counter()
        read(key)
        lat.append((time.perf_counter() - t0) * 1000)
        times.append(time.time())
        if times[-1] >= next_memory:
            mem_t.append(times[-1])
            mem.append(memory())
            next_memory = times[-1] + 0.1
        time.sleep(READ_EVERY_S)
    out.send((times, lat, mem_t, mem, raised))


class Reader:
    def __init__(self, kind: str, target: dict):
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_read_loop, args=(kind, target, self.stop, send), daemon=True)

    def __enter__(self):
        self.proc.start()
        time.sleep(1.0)  # connected and reading
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.result = self.recv.recv()
        self.proc.join(timeout=30)

    @property
    def prioritized(self) -> bool:
        return bool(self.result[4])

    def window(self, start: float, end: float) -> dict:
        times, lat, mem_t, mem = (np.asarray(a) for a in self.result[:4])
        inside = (times >= start) & (times <= end)
        m = mem[(mem_t >= start) & (mem_t <= end)]
        if not inside.any():
            return {"reads": 0}
        lat = lat[inside]
        return {"reads": int(inside.sum()), "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 3), "max_ms": round(float(lat.max()), 1),
                "peak_bytes": int(m.max()) if len(m) else None}


def reader_target(cfg: Config, store, keys: list[str]) -> tuple[str, dict]:
    import pyarrow as pa

    from serving.online.encode import encode_batch, encoding

    if cfg.feast.online_store == "sqlite":
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        tables_ = [_quote_id(_table_id(store.project, store.get_feature_view(v), False)) for v in tables.FEATURE_VIEWS]
        enc = encode_batch(encoding(cfg), _key_table(cfg, keys, pa))
        return "sqlite", {"path": str(cfg.path(cfg.feast.sqlite_path)), "tables": tables_, "keys": enc.entity_keys}
    enc = encode_batch(encoding(cfg), _key_table(cfg, keys, pa))
    namespaces = [redis_store.namespace(store, v) for v in tables.FEATURE_VIEWS]
    return "redis", {"nodes": [n for n in cfg.feast.redis_connection.split(",") if "=" not in n],
                     "cluster": cfg.feast.redis_type == "redis_cluster",
                     "keys": [k + namespaces[0].project for k in enc.entity_keys],
                     "fields": [f for ns in namespaces for f in ns.all_fields]}


def _key_table(cfg: Config, keys: list[str], pa):
    """An Arrow table of just enough columns for encode_batch to give the keys' entity keys."""
    n = len(keys)
    ts = pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC"))
    return pa.table({**{k: keys for k in cfg.data.task_key},
                     tables.EMBEDDING: pa.array([[0.0] * cfg.model.embedding_dim] * n, pa.list_(pa.float32())),
                     tables.N_SAMPLES: pa.array([1] * n, pa.int32()), tables.MODEL_VERSION: ["x"] * n,
                     tables.EVENT_TIMESTAMP: ts, tables.CREATED_TIMESTAMP: ts})


def redis_servers(cfg: Config) -> list:
    """One client per Redis node of cfg (none for SQLite), for cpu_seconds' INFO."""
    if cfg.feast.online_store != "redis":
        return []
    from redis import Redis

    where = redis_store.target(cfg)
    return [Redis(host=host, port=port, **where.options) for host, port in where.nodes]


def cpu_seconds(servers: list) -> dict:
    """CPU seconds used so far: the whole machine's (busy, all cores) and the Redis servers'."""
    import psutil

    times = psutil.cpu_times()
    out = {"machine": sum(times) - times.idle - getattr(times, "iowait", 0.0)}
    if servers:
        info = [server.info("cpu") for server in servers]
        out["redis"] = sum(i["used_cpu_user"] + i["used_cpu_sys"] for i in info)
    return out


def cpu_use(before: dict, after: dict, seconds: float) -> dict:
    """Cores busy on average over the path (machine: all processes; redis: the servers)."""
    return {k: round((after[k] - before[k]) / seconds, 2) for k in before if seconds > 0}
