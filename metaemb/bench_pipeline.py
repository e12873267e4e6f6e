"""`metaemb bench pipeline --tasks N`: the full daily job on N synthetic tasks.

Prints seconds and rows/s per stage, tasks embedded per second, peak RSS of the driver
(Python + JVM) and of Spark's Python workers, sampled every 0.25 s over the process tree.
Everything runs under a fresh folder (default var/bench/<N>) so it never touches the
demo's state.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import psutil

from metaemb.config import Config, from_dict


def add_arguments(p) -> None:
    p.add_argument("--tasks", type=int, default=100_000, help="synthetic tasks (users) (default 100000)")
    p.add_argument("--days", type=int, default=30, help="days of history = window (default 30)")
    p.add_argument("--events-per-task", type=float, default=30.0, help="mean interactions per task in the window")
    p.add_argument("--out", default="", help="work folder (default var/bench/<tasks>)")
    p.add_argument("--keep", action="store_true", help="keep the generated data between runs")
    p.add_argument("--publish-compare", type=int, default=100_000,
                   help="rows for the stock-vs-fast publish comparison (0 = skip)")
    p.add_argument("--json", help="also write the figures to this JSON file")


class PeakRss:
    """Peak resident memory of this process tree, split into driver (Python + JVM) and workers."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak_driver, self.peak_workers, self._stop = interval, 0, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            driver, workers = me.memory_info().rss, 0
            for child in me.children(recursive=True):
                try:
                    rss, cmd = child.memory_info().rss, " ".join(child.cmdline())
                except psutil.Error:
                    continue
                if "java" in cmd:
                    driver += rss
                else:
                    workers += rss
            self.peak_driver = max(self.peak_driver, driver)
            self.peak_workers = max(self.peak_workers, workers)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_config(base: Config, work: Path, tasks: int, days: int) -> Config:
    raw = base.to_dict()
    raw["data"].update(interactions=str(work / "data" / "interactions.parquet"),
                       entity_features=str(work / "data" / "entity_features.parquet"))
    raw["pipeline"].update(storage_root=str(work / "lake"), window_days=days,
                           task_buckets=max(2, min(64, tasks // 20_000)))
    raw["model"]["checkpoint_dir"] = str(work / "models")
    raw["feast"].update(sqlite_path=str(work / "feast" / "online.db"), registry_path=str(work / "feast" / "registry.db"))
    raw["spark"]["shuffle_partitions"] = max(4, min(200, tasks // 10_000))
    raw["train"]["epochs"] = 1
    return from_dict(raw, source=f"<bench {tasks}>", base_dir=base.base_dir)


def run(args, cfg: Config) -> int:
    from metaemb.synthetic import SyntheticSpec, generate
    from pipelines import labeled
    from pipelines import train as train_job
    from pipelines.daily import run_stage
    from pipelines.feast_store import apply
    from pipelines.spark import get_spark

    work = Path(args.out or cfg.path(f"var/bench/{args.tasks}"))
    data_ready = (work / "data" / "interactions.parquet").exists() and args.keep
    for sub in ("lake", "models", "feast") + (() if data_ready else ("data",)):
        shutil.rmtree(work / sub, ignore_errors=True)
    bcfg = bench_config(cfg, work, args.tasks, args.days)
    spec = SyntheticSpec(users=args.tasks, days=args.days, mean_events_per_user=args.events_per_task,
                         snapshot_every_days=7)
    figures: dict = {"tasks": args.tasks, "days": args.days, "stages": {}, "cores": psutil.cpu_count() or 1}
    t = time.perf_counter()
    if not data_ready:
        counts = generate(work / "data", spec, progress=print)
        figures["interactions"] = counts["interactions"]
    figures["generate_s"] = time.perf_counter() - t
    inputs = labeled.resolve_inputs(bcfg)
    apply(bcfg)
    spark = get_spark(bcfg, app_name="metaemb-bench")
    run_date = spec.end_date
    # A model to fine-tune from: trained briefly on a small slice (not what is measured).
    with PeakRss() as rss:
        wall = time.perf_counter()
        for stage in ("labeled", "samples"):
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        figures["train_s"] = _train_small(spark, bcfg, run_date, inputs, train_job)
        for stage in ("embed", "publish", "check"):
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        figures["daily_run_s"] = time.perf_counter() - wall - figures["train_s"]
    figures["peak_rss_driver_mb"] = rss.peak_driver / 2**20
    figures["peak_rss_workers_mb"] = rss.peak_workers / 2**20
    embed_stage = figures["stages"]["embed"]
    figures["tasks_embedded_per_s"] = embed_stage["rows"] / embed_stage["seconds"]
    _print(figures)
    if args.publish_compare:
        from pipelines.bench_publish import bench_publish

        figures["publish_compare"] = bench_publish(bcfg, spark, args.publish_compare)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


def _timed(fn) -> dict:
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    rows = int(result.get("rows", 0))
    print(f"  {result['stage']:8s} {seconds:8.1f}s {rows:>12,} rows {rows / max(seconds, 1e-9):>12,.0f} rows/s",
          flush=True)
    extra = {k: result[k] for k in ("finetune_s", "partitions") if k in result}
    return {"seconds": seconds, "rows": rows, **extra}


def _train_small(spark, cfg, day, inputs, train_job) -> float:
    t = time.perf_counter()
    train_job.run(spark, cfg, day, inputs, progress=lambda line: None, max_tasks=20_000)
    return time.perf_counter() - t


def _print(f: dict) -> None:
    print(f"\nbench pipeline: {f['tasks']:,} tasks, {f['days']} days, run date daily job (train excluded)")
    for stage, s in f["stages"].items():
        print(f"  {stage:8s} {s['seconds']:8.1f}s  {s['rows']:>12,} rows  {s['rows'] / max(s['seconds'], 1e-9):>10,.0f} rows/s")
    print(f"  daily run wall {f['daily_run_s']:.1f}s; tasks embedded/s {f['tasks_embedded_per_s']:,.0f}")
    emb = f["stages"]["embed"]
    if "finetune_s" in emb:
        workers = min(emb.get("partitions", 1), f.get("cores", 1))
        print(f"  embed: fine-tune (torch) {emb['finetune_s']:.1f}s summed over {emb.get('partitions', '?')} partitions "
              f"(~{emb['finetune_s'] / max(workers, 1):.1f}s wall on {workers} cores); the rest of "
              f"{emb['seconds']:.1f}s is Spark: read, shuffle, Arrow transfer, Delta write")
    print(f"  peak RSS: driver (python+JVM) {f['peak_rss_driver_mb']:,.0f} MB, "
          f"python workers {f['peak_rss_workers_mb']:,.0f} MB")
