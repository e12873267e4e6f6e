"""`metaemb bench finetune | pipeline | publish | online`: the benchmarks (metaemb/bench/), each
printing its figures; docs/benchmarks.md records them with the command, machine and date."""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "finetune": "batched fine-tune vs a per-task loop vs this machine's GEMM rate",
    "pipeline": "the full daily job on N synthetic tasks: time, rows/s, memory",
    "publish": "one day of N synthetic embeddings published by each path (stock materialize, one transaction, "
               "batches from the driver or the executors), with a concurrent reader's latency",
    "online": "p50/p99 latency of Feast lookups (SDK, HTTP server) and of score, SQLite and Redis",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, help_text in BENCHES.items():
        globals()[f"_{name}_options"](sub.add_parser(name, help=help_text, description=help_text))


def _finetune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (cuda when available)")
    p.add_argument("--tasks", type=int, help="tasks per timed batched run (default 8192 cpu, 262144 cuda)")
    p.add_argument("--loop-tasks", type=int, default=64, help="tasks for the per-task loop baseline")
    p.add_argument("--chunks", help="comma-separated chunk sizes to try (default: a sweep)")
    p.add_argument("--threads", help="comma-separated CPU thread counts to try (default: 1 and all cores)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is reported")
    p.add_argument("--no-vmap", action="store_true", help="skip the torch.func/vmap variant")
    p.add_argument("--train", action="store_true",
                   help="training (Alg 2a) outer-step tasks/s, kernel vs autograd inner loop, instead")


def _pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", type=int, default=100_000, help="synthetic tasks (users) (default 100000)")
    p.add_argument("--days", type=int, default=30, help="days of history = window (default 30)")
    p.add_argument("--events-per-task", type=float, default=30.0, help="mean interactions per task in the window")
    p.add_argument("--out", default="", help="work folder (default var/bench/<tasks>)")
    p.add_argument("--keep", action="store_true", help="keep the generated data between runs")
    p.add_argument("--publish-compare", type=int, default=100_000,
                   help="rows for the stock-vs-fast publish comparison (0 = skip)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--steady-only", action="store_true",
                   help="only the steady-state day, in this fresh process, on the lake that an earlier run of the "
                        "same --tasks left under --out (local storage); the driver's peak memory is then the daily "
                        "job's own")
    p.add_argument("--storage", choices=("local", "s3", "both"), default="local",
                   help="where the lakehouse lives: local disk, a loopback S3 endpoint (moto's server), or "
                        "both one after the other (default local)")


def _publish_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=100_000, help="tasks in the day (default 100000)")
    p.add_argument("--online-store", choices=["sqlite", "redis", "redis_cluster"], default=None,
                   help="redis / redis_cluster start a loopback redis-server / 3-master cluster here "
                        "(default: the config's online store)")
    p.add_argument("--concurrent-reads", action="store_true",
                   help="a reader in another process reads one task every 2 ms all through each publish: "
                        "its p50/p99/max latency and the server's peak memory")
    p.add_argument("--executors", default="1,2", help="Redis: the executor-write runs, tasks in parallel (default 1,2)")
    p.add_argument("--no-stock", action="store_true", help="skip Feast's stock materialize runs")
    p.add_argument("--no-spark-engine", action="store_true", help="skip Feast's spark.engine run")
    p.add_argument("--json", default=None, help="also write the report here")


def _online_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", type=int, default=10_000, help="tasks published (default 10000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests per case (default 200)")
    p.add_argument("--requests", type=int, default=2_000, help="timed requests per case (default 2000)")
    p.add_argument("--workers", type=int, default=1, help="feature server worker processes (default 1)")
    p.add_argument("--stores", default="sqlite,redis", help="online stores to measure (default sqlite,redis)")
    p.add_argument("--out", default="", help="work folder (default var/bench/online)")


def run(args, cfg) -> int:
    return importlib.import_module(f"metaemb.bench.{args.bench}").run(args, cfg)
