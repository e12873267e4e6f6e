"""`metaemb bench pipeline --tasks N`: the full daily job on N synthetic tasks.

Prints seconds and rows/s per stage, tasks embedded per second, peak resident memory (PSS) of the driver
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

from core.config import Config, from_dict


def add_arguments(p) -> None:
    p.add_argument("--tasks", type=int, default=100_000, help="synthetic tasks (users) (default 100000)")
    p.add_argument("--days", type=int, default=30, help="days of history = window (default 30)")
    p.add_argument("--events-per-task", type=float, default=30.0, help="mean interactions per task in the window")
    p.add_argument("--out", default="", help="work folder (default var/bench/<tasks>)")
    p.add_argument("--keep", action="store_true", help="keep the generated data between runs")
    p.add_argument("--publish-compare", type=int, default=100_000,
                   help="rows for the stock-vs-fast publish comparison (0 = skip)")
    p.add_argument("--json", help="also write the figures to this JSON file")


DAILY_STAGES = ("labeled", "samples", "embed", "publish", "check")


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
    from metaemb.daily import run_stage
    from serving.feast_store import apply
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
        for stage in DAILY_STAGES[:2]:
            rss.stage = stage
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        rss.stage = "train (set-up, not daily)"
        figures["train_s"] = _train_small(spark, bcfg, run_date, inputs, train_job)
        for stage in DAILY_STAGES[2:]:
            rss.stage = stage
            figures["stages"][stage] = _timed(lambda s=stage: run_stage(spark, bcfg, s, run_date, inputs))
        figures["daily_run_s"] = time.perf_counter() - wall - figures["train_s"]
    daily = DAILY_STAGES  # the peaks of the daily run; the small training run is set-up
    figures["peak_rss_driver_mb"] = rss.peak("driver", daily) / 2**20
    figures["peak_rss_workers_mb"] = rss.peak("workers", daily) / 2**20
    figures["peak_rss_mb_by_stage"] = {st: {k: round(v / 2**20) for k, v in parts.items()}
                                       for st, parts in rss.by_stage.items()}
    embed_stage = figures["stages"]["embed"]
    figures["tasks_embedded_per_s"] = embed_stage["rows"] / embed_stage["seconds"]
    _print(figures)
    if args.publish_compare:
        from metaemb.bench_publish import bench_publish

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
    print(f"  peak memory (PSS): driver (python+JVM) {f['peak_rss_driver_mb']:,.0f} MB, "
          f"python workers {f['peak_rss_workers_mb']:,.0f} MB")
    for stage, p in f.get("peak_rss_mb_by_stage", {}).items():
        print(f"    {stage:28s} driver {p['driver']:>6,} MB (its peaks: python {p['python']:>6,}, JVM {p['jvm']:>6,}); "
              f"workers {p['workers']:>6,} MB")
