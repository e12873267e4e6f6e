"""The environment scripts/airflow.sh gives Airflow: from config, deployment settings win."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from af_helpers import PROJECT_ROOT, project_raw, write_config
from metaemb import airflow_env
from core import config as config_mod


def test_env_from_config(tmp_path):
    cfg = config_mod.load(write_config(tmp_path / "m.toml", project_raw(tmp_path, spark={"master": "local[3]"})))
    env = airflow_env.airflow_env(cfg, base={"PATH": "/usr/bin"})
    home = tmp_path / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["METAEMB_CONFIG"] == str(tmp_path / "m.toml")
    conn = json.loads(env["AIRFLOW_CONN_METAEMB_SPARK"])
    assert conn["host"] == "local[3]" and conn["conn_type"] == "spark"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # spark-submit, airflow
    assert (Path(sys.executable).parent / "spark-submit").exists()
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" not in env
    # The JWT secret is generated once per home, private, and stable.
    secret = home / ".jwt_secret"
    assert secret.stat().st_mode & 0o077 == 0
    assert airflow_env.airflow_env(cfg, base={})["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_deployment_settings_win_and_api_port(tmp_path):
    cfg = config_mod.load(write_config(tmp_path / "m.toml", project_raw(tmp_path)))
    pg = "postgresql+psycopg2://airflow@db:5432/airflow"
    env = airflow_env.airflow_env(cfg, base={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg,
                                             "AIRFLOW_CONN_METAEMB_SPARK": "spark://x:7077"}, api_port=8123)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == pg
    assert env["AIRFLOW_CONN_METAEMB_SPARK"] == "spark://x:7077"
    assert "AIRFLOW__CORE__PARALLELISM" not in env  # the SQLite-only limit
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__API__PORT"] == "8123"
    assert airflow_env._db_label(env) == "postgresql+psycopg2://db:5432/airflow"


def test_service_pid_is_recognised_by_start_time_not_by_its_title(tmp_path):
    """A live service whose process title says nothing of Airflow (the api-server rewrites its
    title) is still running; a pid file naming a process of another start time is stale."""
    cfg = config_mod.load(write_config(tmp_path / "m.toml", project_raw(tmp_path)))
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    airflow_env._launch(cfg, "scheduler", sleeper, env={"PATH": "/usr/bin"})
    pid = airflow_env._pid(cfg, "scheduler")
    try:
        assert pid is not None and "airflow" not in Path(f"/proc/{pid}/cmdline").read_text()
        pidfile = airflow_env._run_dir(cfg) / "scheduler.pid"
        started = pidfile.read_text().split()[1]
        pidfile.write_text(f"{pid} {int(started) + 1}")  # same pid, another process
        assert airflow_env._pid(cfg, "scheduler") is None
        pidfile.write_text(f"{pid} {started}")
    finally:
        airflow_env.stop(cfg, quiet=True, timeout=5)
    assert airflow_env._pid(cfg, "scheduler") is None
