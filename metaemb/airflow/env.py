"""The environment every Airflow process of metaemb runs in, and `airflow` commands run in it.

Each setting only when not already set, so a deployment's own settings win: AIRFLOW_HOME =
[airflow] home (var/airflow), DAGs folder = dags/, no examples, LocalExecutor, SQLite metadata
under AIRFLOW_HOME (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN selects e.g. Postgres; the URL and its
password come from the environment, never from the config file), the Spark connection
AIRFLOW_CONN_<[airflow] spark_conn_id> with [spark] master, the venv's bin/ on PATH
(spark-submit), METAEMB_CONFIG. Nothing here imports Airflow: this module sets up the
environment Airflow then starts in.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core import config as config_mod

PROJECT_ROOT = config_mod.PROJECT_ROOT
DAILY_DAG_ID = "metaemb_daily"
RETRAIN_DAG_ID = "metaemb_retrain"
# SQLite metadata DB: every Airflow process waits this long for another writer's lock instead of
# sqlite3's default 5 s (api-server requests failed with "Database error" while the scheduler
# and task runners wrote). Airflow reads it by import path: [database] sql_alchemy_connect_args.
SQLITE_CONNECT_ARGS = {"timeout": 60}
# Errors of a metadata DB that another process holds: retried.
LOCKED = ("database is locked", "could not obtain lock", "lock timeout")


class AirflowEnvError(RuntimeError):
    pass



def load_config() -> config_mod.Config:
    """The config the DAGs use: $METAEMB_CONFIG, else ./metaemb.toml, else defaults."""
    return config_mod.load()


def connection_env_name(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


def spark_connection(cfg: config_mod.Config) -> dict[str, Any]:
    """The Spark connection (JSON form for AIRFLOW_CONN_<ID>): master from config, client mode.

    conn_type "spark" with the full master URL as host is how the provider reads
    `local[*]`, `spark://host:7077`, `k8s://https://...` or `yarn` alike.
    """
    return {
        "conn_type": "spark",
        "host": cfg.spark.master,
        "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
    }



def home(cfg: config_mod.Config) -> Path:
    return cfg.path(cfg.airflow.home).resolve()


def _jwt_secret(h: Path) -> str:
    """One random secret per AIRFLOW_HOME (0600 file), shared by api-server and workers."""
    f = h / ".jwt_secret"
    if not f.exists():
        h.mkdir(parents=True, exist_ok=True)
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return f.read_text().strip()


def airflow_env(cfg: config_mod.Config, base: dict[str, str] | None = None, *,
                api_port: int | None = None) -> dict[str, str]:
    """The full environment for airflow processes (base: os.environ)."""
    env = dict(os.environ if base is None else base)
    h = home(cfg)
    h.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        env["PATH"] = venv_bin + (os.pathsep + path if path else "")
    cfg_file = cfg.file
    defaults = {
        "AIRFLOW_HOME": str(h),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        connection_env_name(cfg.airflow.spark_conn_id): json.dumps(spark_connection(cfg)),
    }
    if "sqlite" in env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", defaults["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]):
        # One writer at a time on SQLite: keep the executor small and wait on locks.
        defaults["AIRFLOW__CORE__PARALLELISM"] = "2"
        for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
            defaults[f"AIRFLOW__DATABASE__{key}"] = f"{__name__}.SQLITE_CONNECT_ARGS"
    if cfg_file:
        defaults["METAEMB_CONFIG"] = cfg_file
    for key, value in defaults.items():
        env.setdefault(key, value)
    if "AIRFLOW__API_AUTH__JWT_SECRET" not in env:
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = _jwt_secret(h)
    port = api_port or recorded_port(h)
    if port:
        url = f"http://127.0.0.1:{port}"
        env["AIRFLOW__API__HOST"] = "127.0.0.1"
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__BASE_URL"] = url
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{url}/execution/"
    return env


def recorded_port(h: Path) -> int | None:
    f = h / "run" / "api-server.port"
    return int(f.read_text()) if f.exists() else None



def airflow(cfg: config_mod.Config, *args: str, env: dict[str, str] | None = None, check: bool = True,
            capture: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run one `airflow ...` command in this environment."""
    env = env or airflow_env(cfg)
    exe = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([exe, *args], env=env, text=True, capture_output=capture, timeout=timeout,
                          cwd=str(PROJECT_ROOT))
    if check and proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-3000:] if capture else ""
        raise AirflowEnvError(f"airflow {' '.join(args)} exited {proc.returncode}\n{tail}")
    return proc


def _with_lock_retry(fn, what: str, attempts: int = 8, delay: float = 3.0):
    """Retry on SQLite 'database is locked' (the scheduler writes at the same time)."""
    for i in range(attempts):
        try:
            return fn()
        except AirflowEnvError as e:
            if i + 1 < attempts and any(s in str(e).lower() for s in LOCKED):
                print(f"[airflow] {what}: metadata DB locked, retrying in {delay:.0f}s ({i + 1}/{attempts})",
                      flush=True)
                time.sleep(delay)
                continue
            raise


def init(cfg: config_mod.Config, env: dict[str, str] | None = None) -> None:
    """`airflow db migrate` (a no-op when up to date) and the shared pool."""
    env = env or airflow_env(cfg)
    t = time.perf_counter()
    stamp = _migrated_stamp(env, cfg.airflow.pool)
    if stamp is not None and stamp[1] and stamp[0].exists() and stamp[0].read_text() == stamp[1]:
        return  # this SQLite file was migrated by this Airflow version (and given the pool)
    _with_lock_retry(lambda: airflow(cfg, "db", "migrate", env=env, capture=True), "db migrate")
    if cfg.airflow.pool:
        _with_lock_retry(lambda: airflow(cfg, "pools", "set", cfg.airflow.pool, "1",
                                         "metaemb: one writer of the Delta tables at a time",
                                         env=env, capture=True), "pools set")
    stamp = _migrated_stamp(env, cfg.airflow.pool)
    if stamp is not None and stamp[1]:
        stamp[0].write_text(stamp[1])
    print(f"[airflow] metadata DB ready ({_db_label(env)}) in {time.perf_counter() - t:.1f}s", flush=True)


def _migrated_stamp(env: dict[str, str], pool: str) -> tuple[Path, str] | None:
    """For SQLite only: a stamp next to the DB file saying which Airflow version migrated it."""
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if not url.startswith("sqlite:///"):
        return None  # a server DB may be recreated behind our back: always migrate (a no-op when current)
    db = Path(url.removeprefix("sqlite:///"))
    if not db.exists():
        return db.with_name(db.name + ".migrated"), ""
    from importlib.metadata import version

    return db.with_name(db.name + ".migrated"), f"{version('apache-airflow')} {db.stat().st_ino} pool={pool}"


def _db_label(env: dict[str, str]) -> str:
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # never print credentials

