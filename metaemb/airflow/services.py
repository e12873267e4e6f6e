"""`airflow standalone` (api-server, scheduler, dag-processor, triggerer) on a free loopback
port, in the background: started, checked and stopped with its whole process tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from core import config as config_mod
from metaemb.airflow.env import AirflowEnvError, PROJECT_ROOT, airflow_env, home, init, recorded_port
from metaemb.testing.loopback import free_port

COMPONENTS = ("scheduler", "dag_processor", "triggerer")


def _run_dir(cfg) -> Path:
    d = home(cfg) / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log_file(cfg) -> Path:
    return home(cfg) / "logs" / "standalone.log"


def standalone_pid(cfg) -> int | None:
    """The pid of the `airflow standalone` that start() launched, while it runs.

    The pid file holds "pid create_time": a reused pid belongs to a process created at
    another time, so it is not taken for ours.
    """
    f = _run_dir(cfg) / "standalone.pid"
    if not f.exists():
        return None
    pid, created = f.read_text().split()
    try:
        proc = psutil.Process(int(pid))
        alive = proc.status() != psutil.STATUS_ZOMBIE and f"{proc.create_time():.2f}" == created
    except psutil.NoSuchProcess:
        return None
    return int(pid) if alive else None


def _launch(cfg, env: dict[str, str]) -> int:
    _log_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    with open(_log_file(cfg), "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(PROJECT_ROOT))
    created = psutil.Process(proc.pid).create_time()
    (_run_dir(cfg) / "standalone.pid").write_text(f"{proc.pid} {created:.2f}")
    return proc.pid


def _log_tail(cfg, lines: int = 20) -> str:
    f = _log_file(cfg)
    return "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) if f.exists() else "(no log)"


def health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def unhealthy(h: dict | None) -> list[str]:
    """The Airflow components the health answer does not call healthy (all of them when None)."""
    if h is None:
        return ["api-server"]
    return [name for name in ("metadatabase", *COMPONENTS) if (h.get(name) or {}).get("status") != "healthy"]


def start(cfg: config_mod.Config, timeout: float = 240.0, attempts: int = 2) -> int:
    """`airflow standalone` in the background on a free loopback port; returns the port.

    Its components start together on one metadata DB; on SQLite one of them can lose a
    write race at start and exit, and a second start then succeeds.
    """
    port = recorded_port(home(cfg))
    if standalone_pid(cfg) and port and not unhealthy(health(f"http://127.0.0.1:{port}")):
        print(f"[airflow] already running (api-server http://127.0.0.1:{port})")
        return port
    stop(cfg, quiet=True)
    for attempt in range(1, attempts + 1):
        port = free_port()
        (_run_dir(cfg) / "api-server.port").write_text(str(port))
        env = airflow_env(cfg, api_port=port)
        # The worker's and the triggerer's log servers listen on every interface by default.
        env.setdefault("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
        env.setdefault("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", str(free_port()))
        init(cfg, env)
        _launch(cfg, env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and standalone_pid(cfg):
            if not unhealthy(health(f"http://127.0.0.1:{port}")):
                print(f"[airflow] airflow standalone: api-server http://127.0.0.1:{port}, scheduler, "
                      f"dag-processor, triggerer (log {_log_file(cfg)})", flush=True)
                return port
            time.sleep(1.0)
        why = "exited" if not standalone_pid(cfg) else f"not healthy after {timeout:.0f}s"
        stop(cfg, quiet=True)
        print(f"[airflow] airflow standalone {why} (attempt {attempt}/{attempts}); its log ends:\n"
              f"{_log_tail(cfg, 8)}", flush=True)
    raise AirflowEnvError(f"airflow standalone did not become healthy; see {_log_file(cfg)}:\n{_log_tail(cfg)}")


def stop(cfg: config_mod.Config, quiet: bool = False, timeout: float = 30.0) -> None:
    """SIGINT to `airflow standalone` (it stops its components), then SIGTERM and SIGKILL to
    whatever of its process tree is left."""
    pid = standalone_pid(cfg)
    if pid is not None:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        os.kill(pid, signal.SIGINT)
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for signal_them in (psutil.Process.terminate, psutil.Process.kill):
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    signal_them(proc)
            _, alive = psutil.wait_procs(alive, timeout=10)
        if not quiet:
            print(f"[airflow] airflow standalone stopped (pid {pid})", flush=True)
    (_run_dir(cfg) / "standalone.pid").unlink(missing_ok=True)
    (_run_dir(cfg) / "api-server.port").unlink(missing_ok=True)


def status(cfg) -> int:
    port = recorded_port(home(cfg))
    pid = standalone_pid(cfg)
    print(f"airflow standalone: {'running (pid %d)' % pid if pid else 'not running'}")
    if pid and port:
        h = health(f"http://127.0.0.1:{port}")
        print(f"api-server http://127.0.0.1:{port}: " + (", ".join(unhealthy(h)) + " unhealthy" if unhealthy(h)
                                                         else "all components healthy"))
    return 0 if pid else 3

