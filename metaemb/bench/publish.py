"""Publish benchmark: Feast's stock materialize vs metaemb's fast path, same rows, one run.

    metaemb [--config PATH] bench publish --rows 100000 [--online-store redis] [--no-spark-engine]
    bench_publish(cfg, spark, rows) -> dict     (called by `metaemb bench pipeline`)

Writes `rows` synthetic 32-float meta embeddings as one run_date partition of a Delta
table under <storage_root>/_bench_publish/ (never the real tables), then publishes the
same partition into three fresh online stores of the configured kind (SQLite or Redis):
stock `materialize` with the local compute engine, optionally stock `materialize` with
Feast's Spark compute engine (`batch_engine: spark.engine`), and the fast path (for Redis
twice: its hand-packed RESP writer, and the same HSETs through redis-py's
`pipeline(transaction=True)`). Each timing is wall-clock from the Delta table to committed
online rows (Spark read included), and a sample of keys is looked up through
get_online_features in every store and compared.
"""

from __future__ import annotations

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
from serving import day, feast_repo, publish
from serving.online import redis as redis_store

log = logging.getLogger(__name__)
BENCH_DATE = date(2026, 1, 15)
FAST_LABEL = "fast (bulk, one transaction)"
REDIS_PY_LABEL = "fast, write via redis-py pipeline"


def _sub_config(cfg: Config, root, name: str, **feast_overrides) -> Config:
    sub = dataclasses.replace(
        cfg,
        pipeline=dataclasses.replace(cfg.pipeline, storage_root=str(root / "lake")),
        feast=dataclasses.replace(
            cfg.feast, project=f"bench_{name}", registry_path=str(root / name / "registry.db"),
            sqlite_path=str(root / name / "online.db"), **feast_overrides),
    )
    return sub


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


def bench_publish(cfg: Config, spark, rows: int, *, spark_engine: bool = True, sample: int = 1000,
                  keep: bool = False, out=sys.stdout) -> dict:
    root = cfg.path(cfg.pipeline.storage_root).resolve() / "_bench_publish"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    base = _sub_config(cfg, root, "data")
    t0 = time.perf_counter()
    write_synthetic(base, spark, rows)
    gen_s = time.perf_counter() - t0

    # (method, Feast batch engine, label, Redis writer of the fast path: None = its own)
    runs = [("materialize", "local", "stock materialize (local engine)", None)]
    if spark_engine:
        runs.append(("materialize", "spark", "stock materialize (spark.engine)", None))
    if cfg.feast.online_store == "redis":
        runs.append(("fast", "local", REDIS_PY_LABEL, redis_py_pipeline_write))
    runs.append(("fast", "local", FAST_LABEL, None))
    results = []
    lookups = {}
    keys = [{k: f"{k}_{i}" for k in cfg.data.task_key} for i in range(0, rows, max(1, rows // sample))]
    for i, (method, engine, label, redis_write) in enumerate(runs):
        sub = _sub_config(cfg, root, f"{method}_{engine}_{i}", batch_engine=engine)
        if sub.feast.online_store == "redis":
            _flush_redis_project(sub)
        store = feast_repo.apply(sub)
        try:
            res = (publish.write_partition(sub, BENCH_DATE, method, store=store) if redis_write is None
                   else _write_with(redis_write, sub, store))
            err = None
        except Exception as e:  # a stock engine that fails here is reported, not fatal
            log.exception("%s failed", label)
            res, err = None, f"{type(e).__name__}: {e}"[:300]
        entry = {"path": label, "method": method, "engine": engine, "rows": rows,
                 "seconds": round(res.seconds, 3) if res else None,
                 "rows_per_s": round(rows / res.seconds) if res else None, "error": err}
        if res and res.phases:
            entry["phases_s"] = {k: round(v, 3) for k, v in res.phases.items()}
        if res:
            df = feast_repo.lookup(sub, keys, store=feast_repo.feature_store(sub))
            lookups[label] = df.sort_values(cfg.data.task_key).reset_index(drop=True)
            entry["looked_up"] = int(df[tables.EMBEDDING].notna().sum())
        results.append(entry)

    ref = lookups.get(runs[0][2])
    identical = all(ref is not None and df.equals(ref) for df in lookups.values())
    by_label = {r["path"]: r for r in results}
    stock = results[0]["rows_per_s"]
    fast = by_label[FAST_LABEL]["rows_per_s"]
    redis_py = by_label.get(REDIS_PY_LABEL, {}).get("seconds")
    report = {
        "rows": rows, "online_store": cfg.feast.online_store, "embedding_dim": cfg.model.embedding_dim,
        "generate_s": round(gen_s, 2), "runs": results, "lookups_identical": identical,
        "sampled_keys": len(keys),
        "speedup_fast_vs_stock": round(fast / stock, 1) if fast and stock else None,
        "redis_py_vs_fast_seconds": round(redis_py / by_label[FAST_LABEL]["seconds"], 2)
        if redis_py and fast else None,
        "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
    }
    print(f"publish bench: {rows} rows x {cfg.model.embedding_dim} floats into {cfg.feast.online_store} "
          f"(load avg {report['load_avg_1m']} on {report['cpus']} cpus)", file=out)
    print(f"  {'path':<36} {'seconds':>9} {'rows/s':>10}", file=out)
    for r in results:
        if r["seconds"] is None:
            print(f"  {r['path']:<36} {'failed':>9}  {r['error']}", file=out)
        else:
            extra = ("  " + " ".join(f"{k}={v}s" for k, v in r["phases_s"].items())) if "phases_s" in r else ""
            print(f"  {r['path']:<36} {r['seconds']:>9.2f} {r['rows_per_s']:>10,}{extra}", file=out)
    print(f"  fast / stock materialize: {report['speedup_fast_vs_stock']}x; "
          f"lookups identical on {len(keys)} keys: {identical}", file=out)
    if report["redis_py_vs_fast_seconds"]:
        print(f"  redis-py pipeline / hand-packed RESP, whole publish: {report['redis_py_vs_fast_seconds']}x the seconds",
              file=out)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return report


def _write_with(writer, cfg: Config, store) -> "publish.WriteResult":
    """The fast path with another Redis writer in place of serving.online.redis's: the same keys
    check, encoding and registry record around it."""
    t0 = time.perf_counter()
    rows = day.check_keys(cfg, day.day_rows(cfg, BENCH_DATE))
    t1 = time.perf_counter()
    writer(store, publish.encoded_day(cfg, day.day_rows(cfg, BENCH_DATE)))
    t2 = time.perf_counter()
    publish.record_served(store, BENCH_DATE)
    t3 = time.perf_counter()
    return publish.WriteResult(rows=rows, seconds=t3 - t0, method="fast", interval=feast_repo.day_interval(BENCH_DATE),
                               phases={"keys": t1 - t0, "write": t2 - t1, "registry": t3 - t2})


def redis_py_pipeline_write(store, encoded) -> None:
    """The fast path's Redis write done by redis-py: the same HSETs (of every encoded
    batch) in one pipeline(transaction=True), i.e. MULTI/EXEC, packed and sent by the library."""
    import redis

    layout = redis_store.redis_layout(store)
    pipe = layout.client.pipeline(transaction=True)
    for enc in encoded:
        rows = redis_store.redis_rows(layout, enc)
        for i in range(enc.rows):
            pipe.execute_command("HSET", *rows.hset_args(i))
    try:
        pipe.execute()
    except redis.RedisError as e:
        raise day.PublishError(f"redis MULTI/EXEC failed: {e}") from e


def _flush_redis_project(cfg: Config) -> None:
    """Drop a previous bench run's keys of this project (bench projects only)."""
    assert cfg.feast.project.startswith("bench_")
    store = feast_repo.feature_store(cfg)
    client = store._get_provider().online_store._get_client(store.config.online_store)
    suffix = cfg.feast.project.encode()
    batch = [k for k in client.scan_iter(count=10000) if k.endswith(suffix)]
    for i in range(0, len(batch), 10000):
        client.delete(*batch[i:i + 10000])



def run(args, cfg: Config) -> int:
    from pipelines.spark import get_spark

    if args.online_store:
        cfg = dataclasses.replace(cfg, feast=dataclasses.replace(cfg.feast, online_store=args.online_store))
    spark = get_spark(cfg, app_name="metaemb-bench-publish")
    report = bench_publish(cfg, spark, args.rows, spark_engine=not args.no_spark_engine)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
