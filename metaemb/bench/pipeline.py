"""`metaemb bench pipeline --tasks N`: the full daily job on N synthetic tasks.

Prints seconds and rows/s per stage, tasks embedded per second, peak resident memory (PSS) of the driver
(Python + JVM) and of Spark's Python workers, sampled every 0.25 s over the process tree.
Everything runs under a fresh folder (default var/bench/<N>) so it never touches the
demo's state. After that first day (the whole window built at once) it runs the next day, the
steady state of a daily job (the window already built, one new day of events in), and prints
it on a line that starts `steady-state day:`. `--storage s3` keeps the lakehouse (Delta
tables, checkpoint) on a loopback S3 endpoint (moto's server) instead; `--storage both` runs local disk, then S3, on the same data,
and prints their per-stage seconds side by side. `--steady-only` runs just the steady-state day
again, in a fresh process, on the lake an earlier run of the same --tasks left: the driver's memory
is then the daily job's alone (as `metaemb run` and each Airflow task see it), without the heap
that the first day and the set-up training run left in the bench's process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import threading
import time
from pathlib import Path

import psutil

from core import stages
from core.config import Config, from_dict


class PeakRss:
    """Peak resident memory of this process tree per stage (the caller sets .stage): driver
    (Python + JVM), its Python and JVM parts, and the Python workers.

    Each process counts its PSS (resident pages, shared ones split among their sharers), so
    the sum is the tree's real footprint. Plain RSS double-counts: pyspark.daemon forks its
    workers (copy-on-write pages shared), and Hadoop's local file system, without its native
    library, forks the JVM to run chmod -- for a moment a second "java" process with the
    JVM's whole RSS. Summed RSS reported 9.3 GB for a JVM whose own RSS never passed 4.7 GB
    (1M-task labeled stage, sampled every second)."""

    PARTS = ("driver", "python", "jvm", "workers")

    def __init__(self, interval: float = 0.25):
        self.interval, self._stop = interval, threading.Event()
        self.stage = ""
        self.by_stage: dict[str, dict[str, int]] = {}

    def peak(self, part: str, stages=None) -> int:
        return max([v[part] for st, v in self.by_stage.items() if stages is None or st in stages] or [0])

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            now = {"python": me.memory_full_info().pss, "jvm": 0, "workers": 0}
            for child in me.children(recursive=True):
                try:  # memory_full_info reads /proc/PID/smaps_rollup: ~0.3 ms a process
                    pss, cmd = child.memory_full_info().pss, " ".join(child.cmdline())
                except psutil.Error:  # exited meanwhile
                    continue
                if "moto.server" in cmd:  # the loopback S3 endpoint is not part of the job
                    continue
                now["jvm" if "java" in cmd else "workers"] += pss
            now["driver"] = now["python"] + now["jvm"]
            peaks = self.by_stage.setdefault(self.stage, dict.fromkeys(self.PARTS, 0))
            for k, v in now.items():
                peaks[k] = max(peaks[k], v)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_config(base: Config, work: Path, tasks: int, days: int, s3_endpoint: str = "") -> Config:
    raw = base.to_dict()
    raw["data"].update(interactions=str(work / "data" / "interactions.parquet"),
                       entity_features=str(work / "data" / "entity_features.parquet"))
    raw["pipeline"].update(storage_root=str(work / "lake"), window_days=days,
                           task_buckets=max(2, min(64, tasks // 20_000)))
    raw["model"]["checkpoint_dir"] = str(work / "models")
    raw["feast"].update(sqlite_path=str(work / "feast" / "online.db"), registry_path=str(work / "feast" / "registry.db"))
    raw["spark"]["shuffle_partitions"] = max(4, min(200, tasks // 10_000))
    raw["train"]["epochs"] = 1
    if s3_endpoint:
        from metaemb.testing.s3_server import s3_section

        raw["pipeline"]["storage_root"] = f"s3://lake/bench-{tasks}/lake"
        raw["model"]["checkpoint_dir"] = f"s3://lake/bench-{tasks}/models"
        raw["s3"] = s3_section(s3_endpoint)
    return from_dict(raw, source=f"<bench {tasks}>", base_dir=base.base_dir)


def run(args, cfg: Config) -> int:
    from metaemb.testing import s3_server as loopback_s3
    from metaemb.datasets.synthetic import SyntheticSpec

    work = Path(args.out or cfg.path(f"var/bench/{args.tasks}"))
    if args.steady_only:
        return _steady_only(args, cfg, work)
    data_ready = (work / "data" / "interactions.parquet").exists() and args.keep
    if not data_ready:
        shutil.rmtree(work / "data", ignore_errors=True)
    # One day more than the window: the first run date has a full window, the next is the steady day.
    spec = SyntheticSpec(users=args.tasks, days=args.days + 1, mean_events_per_user=args.events_per_task,
                         snapshot_every_days=7)
    base: dict = {"tasks": args.tasks, "days": args.days, "cores": psutil.cpu_count() or 1}
    t = time.perf_counter()
    if not data_ready:
        base["interactions"] = _generate_in_child(work / "data", spec)
    base["generate_s"] = time.perf_counter() - t
    storages = ("local", "s3") if args.storage == "both" else (args.storage,)
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        endpoint = ""
        if "s3" in storages:
            os.environ.update(loopback_s3.TEST_CREDENTIALS)
            endpoint = stack.enter_context(loopback_s3.serve(["lake"]))
            # The one Spark session of this process must know the S3 endpoint from its start.
            _session(bench_config(cfg, work, args.tasks, args.days, endpoint), s3=True)
        for storage in storages:
            for sub in ("lake", "models", "feast"):
                shutil.rmtree(work / sub, ignore_errors=True)
            bcfg = bench_config(cfg, work, args.tasks, args.days, endpoint if storage == "s3" else "")
            figures = results[storage] = {**base, "storage": storage, "stages": {}}
            spark = _daily_run(bcfg, spec, figures, s3=bool(endpoint))
            _print(figures)
        if len(results) == 2:
            _print_side_by_side(results)
    if args.publish_compare:
        from metaemb.bench.publish import bench_publish

        figures["publish_compare"] = bench_publish(bcfg, spark, args.publish_compare)
    if args.json:
        Path(args.json).write_text(json.dumps(results if len(results) == 2 else figures, indent=2, default=str))
    return 0


def _generate_in_child(out: Path, spec) -> int:
    """The synthetic data, generated in a child process: its numpy buffers would otherwise
    stay in this process's heap and count as the driver's memory in every stage."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from metaemb.datasets.synthetic import generate

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(generate, out, spec, print).result()["interactions"]


def _daily_run(bcfg: Config, spec, figures: dict, *, s3: bool):
    """Labeled and samples, a small training run (set-up, not measured), then embed, publish, check."""
    from metaemb.daily import run_stage
    from pipelines import labeled
    from pipelines import train as train_job
    from serving.feast_repo import apply

    inputs = labeled.resolve_inputs(bcfg)
    apply(bcfg)
    spark = _session(bcfg, s3=s3)
    run_date = spec.end_date - dt.timedelta(days=1)
    with PeakRss() as rss:
        wall = time.perf_counter()
        for stage in stages.DAILY[:2]:
            rss.stage = stage
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        rss.stage = "train (set-up, not daily)"
        figures["train_s"] = _train_small(spark, bcfg, run_date, inputs, train_job)
        for stage in stages.DAILY[2:]:
            rss.stage = stage
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        figures["daily_run_s"] = time.perf_counter() - wall - figures["train_s"]
    daily = stages.DAILY  # the peaks of the daily run; the small training run is set-up
    figures["peak_rss_driver_mb"] = rss.peak("driver", daily) / 2**20
    figures["peak_rss_workers_mb"] = rss.peak("workers", daily) / 2**20
    figures["peak_rss_mb_by_stage"] = {st: {k: round(v / 2**20) for k, v in parts.items()}
                                       for st, parts in rss.by_stage.items()}
    embed_stage = figures["stages"]["embed"]
    figures["tasks_embedded_per_s"] = embed_stage["rows"] / embed_stage["seconds"]
    figures["steady"] = _steady_day(spark, bcfg, spec.end_date, inputs)
    figures["jvm_heap_cap"] = bcfg.spark.driver_memory
    return spark


def _session(bcfg: Config, s3: bool):
    from pipelines.spark import get_spark

    return get_spark(bcfg, app_name="metaemb-bench", s3=s3)


def _steady_day(spark, bcfg: Config, run_date: dt.date, inputs) -> dict:
    """The day after the first: one new day of events, the rest of the window already built."""
    from metaemb.daily import run_stage

    steady: dict = {"run_date": str(run_date), "stages": {}}
    with PeakRss() as rss:
        wall = time.perf_counter()
        for stage in stages.DAILY:
            rss.stage = stage
            steady["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        steady["seconds"] = time.perf_counter() - wall
    steady["peak_mb"] = {part: round(rss.peak(part) / 2**20) for part in PeakRss.PARTS}
    steady["peak_mb_by_stage"] = {st: {k: round(v / 2**20) for k, v in parts.items()}
                                  for st, parts in rss.by_stage.items()}
    return steady


def _steady_only(args, cfg: Config, work: Path) -> int:
    from core import tables
    from metaemb.datasets.synthetic import SyntheticSpec
    from pipelines import labeled, lake

    bcfg = bench_config(cfg, work, args.tasks, args.days)
    spec = SyntheticSpec(users=args.tasks, days=args.days + 1)
    if not lake.table_exists(bcfg, tables.TASK_SAMPLES) or not (work / "data" / "interactions.parquet").exists():
        raise SystemExit(f"{work}: no lake and data of an earlier run: run `metaemb bench pipeline --tasks "
                         f"{args.tasks} --keep` first, then --steady-only")
    figures = {"tasks": args.tasks, "days": args.days, "storage": "local", "jvm_heap_cap": bcfg.spark.driver_memory,
               "steady": _steady_day(_session(bcfg, s3=False), bcfg, spec.end_date, labeled.resolve_inputs(bcfg))}
    print(f"\nbench pipeline --steady-only: {args.tasks:,} tasks, a fresh process")
    _print_steady(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


def _print_side_by_side(results: dict[str, dict]) -> None:
    local, s3 = results["local"], results["s3"]
    print(f"\nstorage side by side ({local['tasks']:,} tasks; seconds per stage)")
    print(f"  {'stage':8s} {'local':>9s} {'s3':>9s} {'s3/local':>9s}")
    for stage in stages.DAILY:
        a, b = local["stages"][stage]["seconds"], s3["stages"][stage]["seconds"]
        print(f"  {stage:8s} {a:9.1f} {b:9.1f} {b / max(a, 1e-9):8.2f}x")
    a, b = local["daily_run_s"], s3["daily_run_s"]
    print(f"  {'total':8s} {a:9.1f} {b:9.1f} {b / max(a, 1e-9):8.2f}x")
    a, b = local["steady"]["seconds"], s3["steady"]["seconds"]
    print(f"  {'steady-state day':16s} {a:9.1f} {b:9.1f} {b / max(a, 1e-9):8.2f}x (the S3 run comes second: "
          f"a warm JVM)")
    print(f"  publish's read of the day: local {local['stages']['publish']['read_s']:.2f}s, "
          f"s3 {s3['stages']['publish']['read_s']:.2f}s")


def _timed(fn) -> dict:
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    rows = int(result.get("rows", 0))
    print(f"  {result['stage']:8s} {seconds:8.1f}s {rows:>12,} rows {rows / max(seconds, 1e-9):>12,.0f} rows/s",
          flush=True)
    extra = {k: result[k] for k in ("finetune_s", "partitions", "read_s") if k in result}
    return {"seconds": seconds, "rows": rows, **extra}


def _train_small(spark, cfg, day, inputs, train_job) -> float:
    t = time.perf_counter()
    train_job.run(spark, cfg, day, inputs, progress=lambda line: None, max_tasks=20_000)
    return time.perf_counter() - t


def _print(f: dict) -> None:
    print(f"\nbench pipeline: {f['tasks']:,} tasks, {f['days']} days, lakehouse on {f['storage']}, "
          f"run date daily job (train excluded)")
    for stage, s in f["stages"].items():
        print(f"  {stage:8s} {s['seconds']:8.1f}s  {s['rows']:>12,} rows  {s['rows'] / max(s['seconds'], 1e-9):>10,.0f} rows/s")
    print(f"  daily run wall {f['daily_run_s']:.1f}s; tasks embedded/s {f['tasks_embedded_per_s']:,.0f}")
    emb = f["stages"]["embed"]
    if "finetune_s" in emb:
        workers = min(emb.get("partitions", 1), f.get("cores", 1))
        print(f"  embed: fine-tune (torch) {emb['finetune_s']:.1f}s summed over {emb.get('partitions', '?')} partitions "
              f"(~{emb['finetune_s'] / max(workers, 1):.1f}s wall on {workers} cores); the rest of "
              f"{emb['seconds']:.1f}s is Spark: read, shuffle, Arrow transfer, Delta write")
    print(f"  peak memory (PSS): driver (python+JVM) {f['peak_rss_driver_mb']:,.0f} MB, "
          f"python workers {f['peak_rss_workers_mb']:,.0f} MB")
    _print_steady(f)
    for stage, p in f.get("peak_rss_mb_by_stage", {}).items():
        print(f"    {stage:28s} driver {p['driver']:>6,} MB (its peaks: python {p['python']:>6,}, JVM {p['jvm']:>6,}); "
              f"workers {p['workers']:>6,} MB")


def _print_steady(f: dict) -> None:
    steady = f.get("steady")
    if steady:
        parts = ", ".join(f"{st} {v['seconds']:.1f}s ({v['rows'] / max(v['seconds'], 1e-9):,.0f} rows/s)"
                          for st, v in steady["stages"].items())
        peak = steady["peak_mb"]
        print(f"steady-state day: {steady['seconds']:.1f}s total for {steady['run_date']}: {parts}; peak PSS "
              f"driver python {peak['python']:,} MB, driver JVM {peak['jvm']:,} MB (heap cap {f['jvm_heap_cap']}), "
              f"workers {peak['workers']:,} MB")
        for stage, p in steady["peak_mb_by_stage"].items():
            print(f"    steady {stage:21s} python {p['python']:>6,} MB, JVM {p['jvm']:>6,} MB, workers {p['workers']:>6,} MB")
