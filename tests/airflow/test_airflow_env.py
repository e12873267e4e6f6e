"""The environment `metaemb airflow` gives Airflow (from config, deployment settings win), and
the local `airflow standalone` found by its pid file and stopped with its children."""

from __future__ import annotations

import pytest

import json
import sys
import time
from pathlib import Path

from project_helpers import PROJECT_ROOT, project_raw, write_config
from metaemb.airflow import env as airflow_env
from metaemb.airflow import services
from core import config as config_mod

pytestmark = pytest.mark.unit


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


def test_standalone_pid_is_recognised_by_create_time_and_stopped_with_its_children(tmp_path):
    """The pid file names the process by pid and create time: a reused pid is not ours. stop()
    interrupts the process and ends whatever it started that is still alive after."""
    import subprocess

    import psutil

    cfg = config_mod.load(write_config(tmp_path / "m.toml", project_raw(tmp_path)))
    # Stands in for `airflow standalone`: a parent that ignores SIGINT, with a child.
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    pidfile = services._run_dir(cfg) / "standalone.pid"
    created = psutil.Process(proc.pid).create_time()
    pidfile.write_text(f"{proc.pid} {created + 1:.2f}")  # same pid, another process
    assert services.standalone_pid(cfg) is None
    pidfile.write_text(f"{proc.pid} {created:.2f}")
    assert services.standalone_pid(cfg) == proc.pid
    for _ in range(50):
        children = psutil.Process(proc.pid).children()
        if children:
            break
        time.sleep(0.1)
    assert children
    services.stop(cfg, quiet=True, timeout=2)
    proc.wait(timeout=10)
    assert services.standalone_pid(cfg) is None and not pidfile.exists()
    assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE
