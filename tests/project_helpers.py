"""Helpers for the tests that run a small real project (Airflow, end-to-end, check): its config,
scripts/airflow.sh, and what they read back.

Airflow itself is never imported into the pytest process (it reads AIRFLOW_HOME once, at
import): every Airflow step runs as a subprocess through scripts/airflow.sh, the way a user
runs it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core import config as config_mod

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SH = PROJECT_ROOT / "scripts" / "airflow.sh"
END_DATE = dt.date(2026, 10, 30)  # last day of synthetic events
DAYS = 10
TRAIN_DATE = dt.date(2026, 10, 29)
DAGS_TEST_DATE = dt.date(2026, 10, 29)


def make_config(tmp_path: Path, **sections) -> config_mod.Config:
    """A config whose writable state (lake, models, feast, airflow) lives under tmp_path.

    Keyword arguments are TOML-style sections, e.g. make_config(p, pipeline={"cap_samples": 8}).
    """
    raw = {
        "pipeline": {"storage_root": str(tmp_path / "lake"), "task_buckets": 2},
        "model": {"checkpoint_dir": str(tmp_path / "models")},
        "feast": {
            "sqlite_path": str(tmp_path / "feast" / "online.db"),
            "registry_path": str(tmp_path / "feast" / "registry.db"),
            # the tests' readers use a local registry file (they see a switch at once): no wait
            "registry_ttl_s": 0, "switch_grace_s": 0.0,
        },
        "airflow": {"home": str(tmp_path / "airflow")},
        "spark": {"jars_dir": str(PROJECT_ROOT / ".jars"), "shuffle_partitions": 4},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_mod.from_dict(raw, source="<test>", base_dir=PROJECT_ROOT)


def online_store_config(online: str, request) -> dict:
    """The [feast] settings of an online store kind the tests take: sqlite | redis | redis_cluster."""
    if online == "redis":
        return {"online_store": "redis", "redis_connection": request.getfixturevalue("redis_server")}
    if online == "redis_cluster":
        return {"online_store": "redis", "redis_type": "redis_cluster",
                "redis_connection": request.getfixturevalue("redis_cluster")}
    return {}


def write_config(path: Path, raw: dict[str, dict]) -> Path:
    """Write sections -> TOML, then load it with core.config (fails on a bad key)."""
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    config_mod.load(path)
    return path


def project_raw(root: Path, **sections) -> dict[str, dict]:
    """The tests/conftest.py make_config layout, as TOML sections, for a tiny data set."""
    raw = {
        "data": {"interactions": str(root / "data" / "interactions.parquet"),
                 "entity_features": str(root / "data" / "entity_features.parquet")},
        "pipeline": {"storage_root": str(root / "lake"), "task_buckets": 2, "window_days": 3},
        "model": {"checkpoint_dir": str(root / "models"), "meta_hidden": 32, "global_hidden": [32],
                  "item_buckets": 256},
        "train": {"epochs": 1},
        "feast": {"repo_path": str(PROJECT_ROOT / "feature_repo"),
                  "sqlite_path": str(root / "feast" / "online.db"),
                  "registry_path": str(root / "feast" / "registry.db"), "registry_ttl_s": 0, "switch_grace_s": 0.0},
        "airflow": {"home": str(root / "airflow"), "start_date": "2026-10-01", "end_date": END_DATE.isoformat(), "retries": 0,
                    "retry_delay_minutes": 0.1},
        # Each stage is its own short spark-submit here: no C2 JIT (see [spark] driver_java_options).
        "spark": {"jars_dir": str(PROJECT_ROOT / ".jars"), "shuffle_partitions": 2, "master": "local[2]",
                  "driver_memory": "1g", "driver_java_options": "-XX:TieredStopAtLevel=1"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def airflow_sh(config: Path, *args: str, env: dict | None = None, timeout: float = 900,
               check: bool = True) -> subprocess.CompletedProcess:
    """scripts/airflow.sh --config CONFIG ARGS..., output captured (and echoed on failure)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    full_env.update(env or {})
    t = time.perf_counter()
    # Own process group, so a timeout ends the helper's airflow / spark-submit children too.
    popen = subprocess.Popen([str(AIRFLOW_SH), "--config", str(config), *args], env=full_env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(PROJECT_ROOT),
                             start_new_session=True)
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGTERM)  # the backfill helper stops its services on SIGTERM
        try:
            out, err = popen.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
        pytest.fail(f"scripts/airflow.sh {' '.join(args)} still running after {timeout:.0f}s\n"
                    f"--- stdout (tail)\n{out[-6000:]}\n--- stderr (tail)\n{err[-3000:]}")
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
    proc.seconds = time.perf_counter() - t
    if check and proc.returncode != 0:
        pytest.fail(f"scripts/airflow.sh {' '.join(args)} exited {proc.returncode} after {proc.seconds:.0f}s\n"
                    f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}")
    return proc


def task_logs(home: Path, dag_id: str, limit: int = 4000) -> str:
    """Tail of every task log under an AIRFLOW_HOME, for failure messages."""
    out = []
    logs = sorted((home / "logs").glob(f"dag_id={dag_id}/**/*.log")) + sorted((home / "logs").glob("dags-test_*.log"))
    for f in logs:
        out.append(f"--- {f.relative_to(home)}\n{f.read_text(errors='replace')[-limit:]}")
    return "\n".join(out)


def service_errors(home: Path, limit: int = 40) -> str:
    """The error lines of `airflow standalone`'s log (api-server, scheduler ...), for failure messages."""
    log = home / "logs" / "standalone.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if re.search(r"error|exception|traceback|locked", line, re.I)]
    return "--- standalone.log, error lines\n" + "\n".join(errors[-limit:])


def own_lake_config(root: Path, tmp_path: Path, feast_project: str) -> config_mod.Config:
    """The shared project's data and model, with its own lake and Feast store under tmp_path."""
    raw = project_raw(root, pipeline={"storage_root": str(tmp_path / "lake")},
                      feast={"project": feast_project, "sqlite_path": str(tmp_path / "feast" / "online.db"),
                             "registry_path": str(tmp_path / "feast" / "registry.db")})
    return config_mod.load(write_config(tmp_path / "metaemb.toml", raw))


def config_for(root: Path, name: str, **sections) -> Path:
    """A config over the shared project, with its own Airflow home (root/airflow-NAME)."""
    raw = project_raw(root, **sections)
    raw["airflow"]["home"] = str(root / f"airflow-{name}")
    return write_config(root / f"metaemb-{name}.toml", raw)


def table_counts(spark, cfg: config_mod.Config, name: str, date_col: str, keys: list[str]):
    """{date: (rows, distinct keys)} of one Delta table."""
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(str(cfg.table_location(name)))
    rows = (df.groupBy(date_col).agg(F.count(F.lit(1)).alias("rows"),
                                     F.countDistinct(*keys).alias("distinct"))
            .collect())
    return {r[date_col]: (r["rows"], r["distinct"]) for r in rows}


def require(binary: str) -> str:
    exe = shutil.which(binary)
    if exe is None:
        pytest.fail(f"{binary} not installed")
    return exe


def kill9_stage_when_paused(cfg, stage: str, run_date, pause_at: str, log_path: Path, while_paused=None):
    """spark-submit `stage` of `run_date` with a pause point armed (pipelines.faults), wait until
    the stage reaches it, call `while_paused()` (e.g. a reader's lookups), then kill -9 the whole
    process group; returns what while_paused returned."""
    import pyspark

    from metaemb.jobs import submit_command
    from pipelines.faults import PAUSE_AT_ENV, PAUSE_MARKER_ENV

    spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    marker = log_path.parent / f"paused-{stage}"
    env = {**os.environ, PAUSE_AT_ENV: pause_at, PAUSE_MARKER_ENV: str(marker)}
    with log_path.open("w") as log:
        proc = subprocess.Popen(submit_command(cfg, stage, run_date, spark_submit), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, f"{stage} never reached {pause_at}"
            time.sleep(0.2)
        seen = while_paused() if while_paused else None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return seen
