"""`metaemb bench online`: what an online model pays to read an embedding and to score.

For SQLite and a real redis-server on loopback, a synthetic day of --keys embeddings is
published, then one sequential client measures p50 / p99 latency of:
  - Feast's Python SDK: get_online_features for 1 and 100 keys (in this process);
  - Feast's HTTP feature server (`metaemb serve`, a subprocess; keep-alive connection):
    POST /get-online-features for 1 and 100 keys;
  - `score` (serving.score: Feast lookup + the ONNX serving artifact, loaded once as a model
    server holds it) for 1 and 100 rows.
Each case: --warmup requests untimed, then --requests timed. The model is a randomly
initialized one of the config's shape (latency does not depend on the weights).
Everything lives under var/bench/online; nothing touches the demo's state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.config import Config, from_dict, write

DAY = dt.date(2026, 1, 1)
CONTEXT = ["ctx_0", "ctx_1", "ctx_2", "ctx_3"]



def run(args, cfg: Config) -> int:
    from metaemb.testing import redis_server as loopback_redis

    work = Path(args.out or cfg.path("var/bench/online")).resolve()
    shutil.rmtree(work, ignore_errors=True)
    version = _model(cfg, work)
    keys = [str(i) for i in range(args.keys)]
    print(f"bench online: {args.keys:,} tasks published, model {version}, embedding_dim {cfg.model.embedding_dim}; "
          f"one sequential client, {args.warmup} warm-up + {args.requests:,} timed requests per case; "
          f"feature server workers: {args.workers}", flush=True)
    results = []
    for store in args.stores.split(","):
        with contextlib.ExitStack() as stack:
            feast = {"online_store": store}
            if store == "redis":
                feast["redis_connection"] = stack.enter_context(loopback_redis.serve())
            scfg = _store_config(cfg, work, store, feast)
            _publish(scfg, keys, version)
            url = stack.enter_context(_feature_server(scfg, work / f"{store}.toml", args.workers))
            results += _measure_store(scfg, store, url, keys, version, args)
    _print(results)
    return 0


def _model(cfg: Config, work: Path) -> str:
    """A randomly initialized checkpoint of the config's shape and its serving artifact."""
    from models.checkpoint import Checkpoint, save_checkpoint
    from models.blocks import ModelSpec, init_params
    from pipelines.train import export_artifact

    spec = ModelSpec.from_config(cfg.model, 8, len(CONTEXT))
    ckpt = Checkpoint(spec=spec, params=init_params(spec, 0), context_columns=CONTEXT,
                      meta_columns=[f"m{i}" for i in range(8)])
    save_checkpoint(ckpt, work / "models")
    export_artifact(ckpt, work / "models")
    return ckpt.version


def _store_config(cfg: Config, work: Path, store: str, feast: dict) -> Config:
    raw = cfg.to_dict()
    raw["pipeline"]["storage_root"] = str(work / "lake")
    raw["model"]["checkpoint_dir"] = str(work / "models")
    raw["feast"].update(feast, project=f"bench_online_{store}", sqlite_path=str(work / store / "online.db"),
                        registry_path=str(work / store / "registry.db"))
    return from_dict(raw, source=f"<bench online {store}>", base_dir=cfg.base_dir)


def _publish(cfg: Config, keys: list[str], version: str) -> None:
    import pyarrow as pa

    from core import tables
    from serving import feast_repo, publish

    rng = np.random.default_rng(0)
    n, at = len(keys), dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    day = pa.table({
        cfg.data.task_key[0]: keys,
        tables.EMBEDDING: list(rng.normal(size=(n, cfg.model.embedding_dim)).astype(np.float32)),
        tables.N_SAMPLES: pa.array(np.full(n, 20), pa.int32()), tables.MODEL_VERSION: [version] * n,
        tables.EVENT_TIMESTAMP: pa.array([at] * n, pa.timestamp("us", tz="UTC")),
        tables.CREATED_TIMESTAMP: pa.array([at] * n, pa.timestamp("us", tz="UTC"))})
    publish.write_partition(cfg, DAY, "fast", store=feast_repo.apply(cfg), table=day)


@contextlib.contextmanager
def _feature_server(cfg: Config, config_file: Path, workers: int):
    import requests

    from metaemb.testing.loopback import free_port

    port = free_port()
    log = open(config_file.with_suffix(".serve.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "metaemb", "--config", str(write(cfg, config_file)), "serve",
                             "--port", str(port), "--workers", str(workers)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"metaemb serve did not come up on {url}; see {log.name}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _measure_store(cfg: Config, store: str, url: str, keys: list[str], version: str, args) -> list[dict]:
    import pandas as pd
    import requests

    from core import tables
    from serving import feast_repo
    from serving.onnx_runtime import load_for_version
    from serving.score import score

    fs = feast_repo.feature_store(cfg)
    artifact = load_for_version(cfg, version)
    service = fs.get_feature_service(tables.FEATURE_SERVICE)
    key = cfg.data.task_key[0]
    rng = np.random.default_rng(1)
    session = requests.Session()  # one keep-alive connection

    def sdk(n):
        return lambda: fs.get_online_features(features=service, entity_rows=[{key: k} for k in
                                                                             rng.choice(keys, n)]).to_dict()

    def http(n):
        def call():
            body = {"feature_service": tables.FEATURE_SERVICE, "entities": {key: list(rng.choice(keys, n))}}
            r = session.post(f"{url}/get-online-features", json=body, timeout=10)
            r.raise_for_status()
        return call

    def scoring(n):
        def call():
            rows = pd.DataFrame({key: rng.choice(keys, n), "item_id": rng.integers(0, 10**6, n)})
            for c in CONTEXT:
                rows[c] = rng.normal(size=n)
            score(cfg, rows, store=fs, artifact=artifact)
        return call

    out = []
    for path, make in (("SDK lookup", sdk), ("HTTP lookup", http), ("score", scoring)):
        for n in (1, 100):
            p50, p99 = _latency(make(n), args.warmup, args.requests)
            out.append({"store": store, "path": path, "n": n, "p50_ms": p50, "p99_ms": p99})
            print(f"  {store:6s} {path:11s} {n:>3} {'key' if 'lookup' in path else 'row'}{'s' if n > 1 else ' '}"
                  f"  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", flush=True)
    return out


def _latency(call: Callable[[], object], warmup: int, timed: int) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    seconds = np.empty(timed)
    for i in range(timed):
        t = time.perf_counter()
        call()
        seconds[i] = time.perf_counter() - t
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def _print(results: list[dict]) -> None:
    print("\n| store | path | keys/rows | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['store']} | {r['path']} | {r['n']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    redis_http = [r for r in results if r["store"] == "redis" and r["path"] == "HTTP lookup" and r["n"] == 1]
    if redis_http:
        p99 = redis_http[0]["p99_ms"]
        print(f"goal HTTP p99 <= 5 ms for one key on Redis: {p99:.2f} ms -> {'met' if p99 <= 5 else 'missed'}")
