"""scripts/services.sh manages a real redis-server; the Redis password never reaches files or logs."""

from __future__ import annotations

import pytest

import logging
import os
import subprocess
from pathlib import Path

import psutil
import redis

from project_helpers import make_config

from metaemb.testing.loopback import free_port
from serving import feast_repo

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-for-tests"


def test_services_script_starts_and_stops_redis_with_password(tmp_path):
    port = free_port()
    env = {**os.environ, "METAEMB_VAR": str(tmp_path / "var"), "METAEMB_REDIS_PORT": str(port),
           "METAEMB_REDIS_PASSWORD": SECRET}
    script = str(ROOT / "scripts" / "services.sh")
    run = lambda action: subprocess.run([script, action, "redis"], env=env, capture_output=True,  # noqa: E731
                                        text=True, timeout=60)
    started = run("start")
    try:
        assert started.returncode == 0, started.stderr
        assert SECRET not in started.stdout + started.stderr
        pid = int((tmp_path / "var" / "run" / "redis.pid").read_text())
        cmdline = " ".join(psutil.Process(pid).cmdline())
        assert SECRET not in cmdline and f"127.0.0.1:{port}" in cmdline
        assert redis.Redis(host="127.0.0.1", port=port, password=SECRET).ping()
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            raise AssertionError("redis accepted a client without the password")
        except redis.AuthenticationError:
            pass
        status = run("status")
        assert status.returncode == 0 and "PONG" in status.stdout
        assert run("start").stdout.startswith("redis already running")
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run("status").returncode == 3


def test_redis_password_from_env_only_in_memory(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("METAEMB_REDIS_PASSWORD", SECRET)
    cfg = make_config(tmp_path, feast={"online_store": "redis", "redis_connection": "127.0.0.1:6390"})
    caplog.set_level(logging.DEBUG)
    text = feast_repo.render_yaml(cfg)
    assert SECRET not in text and "password=${METAEMB_REDIS_PASSWORD}" in text
    rc = feast_repo.repo_config(cfg)
    assert rc.online_store.connection_string == f"127.0.0.1:6390,password={SECRET}"
    assert SECRET not in caplog.text
    # one setting switches the store
    assert feast_repo.repo_config(make_config(tmp_path)).online_store.type == "sqlite"
