"""Publish benchmark: the ways of writing one day into the online store, side by side, one run.

    metaemb [--config PATH] bench publish --rows 1000000 --online-store redis --concurrent-reads
    bench_publish(cfg, spark, rows) -> dict     (also called by `metaemb bench pipeline`)

Writes `rows` synthetic 32-float meta embeddings as one run_date partition of a Delta table
under <storage_root>/_bench_publish/ (never the real tables) and publishes that same day again
and again into one Feast project, each time by another path, so that every path starts from a
served day and replaces it (the steady state of a daily job):

  stock materialize      Feast's `materialize`, local engine and spark.engine (--no-stock: skip)
  one transaction        Redis: the whole day in ONE MULTI/EXEC from the driver, over the rows
                         readers read (metaemb's publish before the namespaces)
  redis-py pipeline      Redis: the batches sent by redis-py's pipeline (transaction=False)
                         instead of metaemb's packed RESP (the library's figure)
  batches, driver        metaemb's publish: the day into the other namespace in batches of
                         [feast] write_batch_rows, the switch, the old namespace removed
  batches, executors xN  the same with the Spark executors writing (N tasks in parallel), each
                         task reading its files of the day with delta-rs (write_from = "spark")
  ... Spark's read       the same with the day read by Spark and handed to the tasks by
                         mapInArrow (what a table delta-rs refuses gets)

Before the executor paths, one Spark job starts the Python workers on every task slot and
imports what the writers import ("executor warm-up"): a daily spark-submit pays that once, and
without it the first executor path would carry it alone.

For each: seconds until readers see the new day, seconds with the old day removed, rows/s, and
the cores busy on average (the machine's, and the Redis servers'), and
with --concurrent-reads the latency of a reader in another process that reads one task at a time
(Redis: HMGET of both namespaces' fields; SQLite: both tables' rows), every 2 ms, all through the
publish: p50 / p99 / max, and the server's memory at its peak. Lookups through Feast are compared
across paths. The Redis server (or a 3-master Redis Cluster with --online-store redis_cluster) is
started here on loopback, so every figure is this machine's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from datetime import date, datetime, timezone

from core import tables
from core.config import Config
from metaemb.bench import observe
from serving import feast_repo, publish, slots
from serving.day import check_keys, day_rows
from serving.online import redis as redis_store

log = logging.getLogger(__name__)
BENCH_DATE = date(2026, 1, 15)


def write_synthetic(cfg: Config, spark, rows: int, run_date: date = BENCH_DATE, seed: int = 7) -> None:
    """`rows` random embeddings as the run_date partition of cfg's meta_embeddings table."""
    from pyspark.sql import functions as F

    dim = cfg.model.embedding_dim
    ev = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc)
    df = spark.range(rows).select(
        *[F.concat(F.lit(f"{k}_"), F.col("id").cast("string")).alias(k) for k in cfg.data.task_key],
        F.array(*[F.randn(seed + i).cast("float") for i in range(dim)]).alias(tables.EMBEDDING),
        ((F.col("id") % 60) + 1).cast("int").alias(tables.N_SAMPLES),
        F.lit("bench-model").alias(tables.MODEL_VERSION),
        (F.lit(ev).cast("timestamp") + F.expr("INTERVAL 1 DAY")).alias(tables.EVENT_TIMESTAMP),
        F.current_timestamp().alias(tables.CREATED_TIMESTAMP),
        F.lit(run_date).alias(tables.RUN_DATE),
    )
    (df.write.format("delta").mode("overwrite").partitionBy(tables.RUN_DATE)
     .save(cfg.table_location(tables.META_EMBEDDINGS).spark_uri))


# ------------------------------------------------------------------ the paths


def one_transaction(cfg: Config, store) -> int:
    """The whole day in ONE MULTI/EXEC from the driver, into the namespace readers read: Redis
    runs the EXEC whole, serving nobody else meanwhile (metaemb's publish before namespaces)."""
    from redis.exceptions import RedisError

    client = redis_store.connect(cfg)
    ns = redis_store.namespace(store, slots.served_view(store))
    day = day_rows(cfg, BENCH_DATE)
    rows = check_keys(cfg, day)
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("MULTI")
        queued = 0
        for enc in publish.encoded_day(cfg, day):
            r = redis_store.redis_rows(ns, enc)
            for lo in range(0, enc.rows, 5000):
                conn.send_packed_command([redis_store.packed_hsets(ns, r, range(lo, min(lo + 5000, enc.rows)))],
                                         check_health=False)
            queued += enc.rows
        conn.send_command("EXEC")
        for _ in range(queued + 1):  # OK, then QUEUED per command
            conn.read_response()
        conn.read_response()  # EXEC's replies
    except RedisError:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
        client.close()
    start, end = slots.day_interval(BENCH_DATE)
    store.registry.apply_materialization(store.get_feature_view(ns.view), store.project, start, end, commit=True)
    return rows


def redis_py_writer(cfg: Config, run_date: date, ns: redis_store.Namespace) -> int:
    """publish's bulk write with redis-py's pipeline (transaction=False) in place of the packed
    RESP: the same HSETs, batches and namespace."""
    client = redis_store.connect(cfg)
    rows = 0
    try:
        for enc in publish.encoded_day(cfg, day_rows(cfg, run_date)):
            r = redis_store.redis_rows(ns, enc)
            for lo in range(0, enc.rows, cfg.feast.write_batch_rows):
                with client.pipeline(transaction=False) as pipe:
                    for i in range(lo, min(lo + cfg.feast.write_batch_rows, enc.rows)):
                        mapping = {ns.ts_field: r.ts_values[i], **{f: col[i] for f, col in zip(ns.fields.values(),
                                                                                            r.columns)}}
                        pipe.hset(r.keys[i], mapping=mapping)
                    pipe.execute()
            rows += enc.rows
    finally:
        client.close()
    return rows


# ------------------------------------------------------------------ the run


def bench_publish(cfg: Config, spark, rows: int, *, stock: bool = True, spark_engine: bool = True,
                  executors: tuple[int, ...] = (1, 2), concurrent_reads: bool = False, sample: int = 1000,
                  out=sys.stdout) -> dict:
    from metaemb.daily import spark_read_writer, spark_writer

    root = cfg.path(cfg.pipeline.storage_root).resolve() / "_bench_publish"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sub = dataclasses.replace(
        cfg, pipeline=dataclasses.replace(cfg.pipeline, storage_root=str(root / "lake")),
        feast=dataclasses.replace(cfg.feast, project="bench_publish", registry_path=str(root / "registry.db"),
                                  sqlite_path=str(root / "online.db"), switch_grace_s=0.0, registry_ttl_s=0))
    t0 = time.perf_counter()
    write_synthetic(sub, spark, rows)
    gen_s = time.perf_counter() - t0
    redis = sub.feast.online_store == "redis"
    paths = []  # (label, kind, how)
    if stock:
        paths.append(("stock materialize (local engine)", "materialize", "local"))
        if spark_engine:
            paths.append(("stock materialize (spark.engine)", "materialize", "spark"))
    if redis and sub.feast.redis_type == "redis":  # a cluster runs no transaction over keys of several slots
        paths.append(("one transaction, driver", "one_transaction", None))
    if redis:
        paths.append(("redis-py pipeline, driver", "fast", "redis-py"))
    paths.append(("batches, driver", "fast", None))
    if redis:
        paths += [(f"batches, executors x{n}", "fast", ("files", n)) for n in executors]
        paths += [(f"batches, executors x{n}, Spark's read", "fast", ("spark", n)) for n in executors]

    store = feast_repo.apply(sub)
    publish.write_partition(sub, BENCH_DATE, "fast", store=store)  # a served day for the first path to replace
    keys = [f"{sub.data.task_key[0]}_{i}" for i in range(0, rows, max(1, rows // sample))]
    kind, target = observe.reader_target(sub, store, keys)
    servers = observe.redis_servers(sub)
    writers = {"files": spark_writer, "spark": spark_read_writer}
    results, lookups = [], {}
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(observe.Reader(kind, target)) if concurrent_reads else None
        spans = []
        if reader is not None:  # the floor: the same reads with no publish running
            start = time.time()
            time.sleep(3.0)
            results.append({"path": "(no publish)", "rows": 0})
            spans.append((start, time.time(), time.time()))
        if redis and executors:
            results.append(_warm_executors(spark))
            spans.append(None)
        for label, method, how in paths:
            cfg_path = dataclasses.replace(sub, feast=dataclasses.replace(sub.feast, batch_engine=how)) \
                if method == "materialize" else sub
            store = feast_repo.feature_store(cfg_path)
            cpu_before = observe.cpu_seconds(servers)
            start = time.time()
            t = time.perf_counter()
            entry = {"path": label, "rows": rows}
            try:
                if method == "one_transaction":
                    one_transaction(cfg_path, store)
                    entry["served_s"] = entry["total_s"] = time.perf_counter() - t
                else:
                    writer = (redis_py_writer if how == "redis-py" else
                              writers[how[0]](spark, partitions=how[1]) if isinstance(how, tuple) else None)
                    res = publish.write_partition(cfg_path, BENCH_DATE, method, store=store, writer=writer)
                    entry.update(served_s=res.seconds, total_s=time.perf_counter() - t,
                                 phases_s={k: round(v, 3) for k, v in res.phases.items()})
            except Exception as e:  # a stock engine that fails here is reported, not fatal
                log.exception("%s failed", label)
                entry["error"] = f"{type(e).__name__}: {e}"[:300]
            spans.append((start, start + entry.get("served_s", 0.0), time.time()))
            entry["cpu"] = observe.cpu_use(cpu_before, observe.cpu_seconds(servers), time.perf_counter() - t)
            if "served_s" in entry:
                entry["rows_per_s"] = round(rows / entry["served_s"])
                df = feast_repo.lookup(sub, [{sub.data.task_key[0]: k} for k in keys])
                lookups[label] = df.sort_values(sub.data.task_key).reset_index(drop=True)
                entry["looked_up"] = int(df[tables.EMBEDDING].notna().sum())
            results.append(entry)
            time.sleep(1.0 if concurrent_reads else 0.0)  # the reader's quiet gap between paths
    if reader is not None:
        for entry, span in zip(results, spans):
            if span is None:
                continue
            start, served, end = span
            entry["reader"] = reader.window(start, end)  # the whole publish
            if entry.get("served_s") and end > served:  # until readers see the new day / the old one's removal
                entry["reader_until_served"] = reader.window(start, served)
                entry["reader_removal"] = reader.window(served, end)
    first = next(iter(lookups.values()), None)
    report = {"rows": rows, "online_store": sub.feast.online_store,
              "reader_prioritized": reader.prioritized if reader is not None else None, "redis_type": sub.feast.redis_type,
              "write_batch_rows": sub.feast.write_batch_rows, "embedding_dim": sub.model.embedding_dim,
              "generate_s": round(gen_s, 2), "runs": results, "sampled_keys": len(keys),
              "lookups_identical": all(first is not None and df.equals(first) for df in lookups.values()),
              "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    _print(report, out)
    shutil.rmtree(root, ignore_errors=True)
    return report


def _warm_executors(spark) -> dict:
    """One task per slot that imports what the executor writers import."""
    def imports(_rows):
        import importlib

        for name in ("deltalake", "pyarrow.dataset", "pipelines.lake", "serving.online.redis"):
            importlib.import_module(name)
        yield 1

    slots = spark.sparkContext.defaultParallelism
    t = time.perf_counter()
    spark.sparkContext.parallelize(range(slots), slots).mapPartitions(imports).sum()
    return {"path": "executor warm-up", "rows": 0, "warm_up_s": round(time.perf_counter() - t, 2)}


def _print(report: dict, out) -> None:
    print(f"publish bench: {report['rows']:,} rows x {report['embedding_dim']} floats into {report['online_store']}"
          f"{' (cluster)' if report['redis_type'] == 'redis_cluster' and report['online_store'] == 'redis' else ''}, "
          f"batches of {report['write_batch_rows']:,} (load avg {report['load_avg_1m']} on {report['cpus']} cpus)",
          file=out)
    print(f"  {'path':<34} {'served s':>9} {'total s':>8} {'rows/s':>10}  reader p50 / p99 / max ms, peak MB",
          file=out)
    for r in report["runs"]:
        if r["path"] == "(no publish)":
            rd = r["reader"]
            print(f"  {r['path']:<34} {'':>9} {'':>8} {'':>10}  {rd['p50_ms']:.2f} / {rd['p99_ms']:.2f} / "
                  f"{rd['max_ms']:.1f} ms ({rd['reads']:,} reads), {rd['peak_bytes'] / 2**20:,.0f} MB", file=out)
            continue
        if "error" in r:
            print(f"  {r['path']:<34} {'failed':>9}  {r['error']}", file=out)
            continue
        if "warm_up_s" in r:
            print(f"  {r['path']:<34} {r['warm_up_s']:>9.2f}  (Python workers started on every task slot)", file=out)
            continue
        rd = r.get("reader") or {}
        read = (f"  {rd['p50_ms']:.2f} / {rd['p99_ms']:.2f} / {rd['max_ms']:.1f} ms ({rd['reads']:,} reads)"
                + (f", {rd['peak_bytes'] / 2**20:,.0f} MB" if rd.get("peak_bytes") else "")) if rd.get("reads") else ""
        print(f"  {r['path']:<34} {r['served_s']:>9.2f} {r['total_s']:>8.2f} {r['rows_per_s']:>10,}{read}", file=out)
        cpu = r.get("cpu") or {}
        if cpu:
            print(f"  {'  cores busy':<34} {'':>9} {'':>8} {'':>10}  machine {cpu['machine']:.2f} of {report['cpus']}"
                  + (f", redis-server {cpu['redis']:.2f}" if "redis" in cpu else ""), file=out)
        for part in ("until_served", "removal"):
            rd = r.get(f"reader_{part}") or {}
            if rd.get("reads"):
                print(f"  {'  reader ' + part.replace('_', ' '):<34} {'':>9} {'':>8} {'':>10}  {rd['p50_ms']:.2f} / "
                      f"{rd['p99_ms']:.2f} / {rd['max_ms']:.1f} ms ({rd['reads']:,} reads)", file=out)
    print(f"  lookups identical on {report['sampled_keys']:,} keys: {report['lookups_identical']}"
          + ("" if report["reader_prioritized"] is None else
             f"; reader at nice {observe.READER_NICE if report['reader_prioritized'] else 0}"), file=out)


def run(args, cfg: Config) -> int:
    from metaemb.testing import redis_server
    from pipelines.spark import get_spark

    with contextlib.ExitStack() as stack:
        if args.online_store in ("redis", "redis_cluster"):
            connection = stack.enter_context(redis_server.serve_cluster(3) if args.online_store == "redis_cluster"
                                             else redis_server.serve())
            cfg = dataclasses.replace(cfg, feast=dataclasses.replace(
                cfg.feast, online_store="redis", redis_connection=connection,
                redis_type="redis_cluster" if args.online_store == "redis_cluster" else "redis"))
        elif args.online_store:
            cfg = dataclasses.replace(cfg, feast=dataclasses.replace(cfg.feast, online_store=args.online_store))
        spark = get_spark(cfg, app_name="metaemb-bench-publish")
        report = bench_publish(cfg, spark, args.rows, stock=not args.no_stock, spark_engine=not args.no_spark_engine,
                               executors=tuple(int(n) for n in args.executors.split(",") if n),
                               concurrent_reads=args.concurrent_reads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
