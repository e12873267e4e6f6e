"""Airflow for metaemb on one machine: environment, metadata DB, services, backfill.

    python -m metaemb.airflow_env [--config PATH] COMMAND ...      (scripts/airflow.sh wraps it)

    env                      print `export ...` lines (eval "$(scripts/airflow.sh env)")
    init                     airflow db migrate (idempotent) + the [airflow] pool
    dags-test DATE [DAG]     airflow dags test metaemb_daily DATE (in-process, no services)
    start | stop | status    api-server + scheduler + dag-processor on free loopback ports
    backfill FROM TO         airflow backfill create --dag-id metaemb_daily ... ; waits, reports
                             per-date state (starts the services first if they are not running,
                             and stops them after in that case)
    airflow ARGS...          any airflow command in this environment

Environment (each only when not already set, so a deployment's own settings win):
AIRFLOW_HOME = [airflow] home (var/airflow), DAGs folder = dags/, no examples, LocalExecutor,
SQLite metadata under AIRFLOW_HOME (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN selects e.g.
Postgres; the URL and its password come from the environment, never from the config file),
the Spark connection AIRFLOW_CONN_<[airflow] spark_conn_id> with [spark] master, the venv's
bin/ on PATH (spark-submit), METAEMB_CONFIG.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from metaemb import airflow_dags as wiring
from core import config as config_mod

SERVICES = ("api-server", "scheduler", "dag-processor")
LOCKED = ("database is locked", "could not obtain lock", "lock timeout")


class AirflowEnvError(RuntimeError):
    pass


# --- environment ------------------------------------------------------------------------

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
    cfg_file = wiring.config_file(cfg)
    defaults = {
        "AIRFLOW_HOME": str(h),
        "AIRFLOW__CORE__DAGS_FOLDER": str(wiring.PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        wiring.connection_env_name(cfg.airflow.spark_conn_id): json.dumps(wiring.spark_connection(cfg)),
    }
    if "sqlite" in env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", defaults["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]):
        # One writer at a time on SQLite: keep the executor small and wait on locks.
        defaults["AIRFLOW__CORE__PARALLELISM"] = "2"
    if cfg_file:
        defaults["METAEMB_CONFIG"] = cfg_file
    for key, value in defaults.items():
        env.setdefault(key, value)
    if "AIRFLOW__API_AUTH__JWT_SECRET" not in env:
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = _jwt_secret(h)
    port = api_port or _recorded_port(h)
    if port:
        url = f"http://127.0.0.1:{port}"
        env["AIRFLOW__API__HOST"] = "127.0.0.1"
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__BASE_URL"] = url
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{url}/execution/"
    return env


def _recorded_port(h: Path) -> int | None:
    f = h / "run" / "api-server.port"
    return int(f.read_text()) if f.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow(cfg: config_mod.Config, *args: str, env: dict[str, str] | None = None, check: bool = True,
            capture: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run one `airflow ...` command in this environment."""
    env = env or airflow_env(cfg)
    exe = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.run([exe, *args], env=env, text=True, capture_output=capture, timeout=timeout,
                          cwd=str(wiring.PROJECT_ROOT))
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


# --- dags test ----------------------------------------------------------------------------

def dags_test(cfg: config_mod.Config, date: str, dag_id: str = wiring.DAILY_DAG_ID) -> int:
    env = airflow_env(cfg)
    init(cfg, env)
    t = time.perf_counter()
    # `dags test` runs the tasks in this process and logs them to stdout only: keep a copy.
    log_path = home(cfg) / "logs" / f"dags-test_{dag_id}_{date}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "airflow")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([exe, "dags", "test", dag_id, date], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=str(wiring.PROJECT_ROOT))
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    print(f"[airflow] dags test {dag_id} {date}: exit {rc} in {time.perf_counter() - t:.1f}s (log {log_path})",
          flush=True)
    return rc


# --- services -----------------------------------------------------------------------------

def _run_dir(cfg) -> Path:
    d = home(cfg) / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a live pid, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]  # fields 3 and 22 of stat(5)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _pid(cfg, name: str) -> int | None:
    """The service's pid while it runs, else None.

    The pid file holds "pid starttime": a pid whose process started at another time is a
    reused pid, not ours. (Matching "airflow" in /proc/PID/cmdline instead was racy: the
    api-server rewrites its process title with setproctitle, and a read mid-rewrite saw no
    "airflow", so a live api-server was taken for dead and relaunched.)
    """
    f = _run_dir(cfg) / f"{name}.pid"
    if not f.exists():
        return None
    parts = f.read_text().split()
    pid = int(parts[0])
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie not yet reaped
        return None
    if len(parts) > 1:
        return pid if stat[1] == parts[1] else None
    try:  # a pid file without start time (older metaemb): the command line must be Airflow's
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (ProcessLookupError, FileNotFoundError):
        return None
    return pid if "airflow" in cmdline else None


def running(cfg) -> dict[str, int | None]:
    return {name: _pid(cfg, name) for name in SERVICES}


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
            return json.loads(r.read())
    except Exception:
        return None


def _service_commands(port: int) -> dict[str, list[str]]:
    exe = str(Path(sys.executable).parent / "airflow")
    return {
        "api-server": [exe, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": [exe, "scheduler"],
        "dag-processor": [exe, "dag-processor"],
    }


def _launch(cfg, name: str, cmd: list[str], env: dict[str, str]) -> None:
    logs = home(cfg) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(wiring.PROJECT_ROOT))
    stat = _proc_stat(proc.pid)
    (_run_dir(cfg) / f"{name}.pid").write_text(f"{proc.pid} {stat[1] if stat else ''}".strip())


def _log_tail(cfg, name: str, lines: int = 15) -> str:
    f = home(cfg) / "logs" / f"{name}.log"
    return "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) if f.exists() else "(no log)"


def revive(cfg, env: dict[str, str], port: int, restarts: dict[str, int], names=SERVICES,
           max_restarts: int = 2) -> list[str]:
    """Relaunch those of `names` (services already launched) that have exited, each at most
    max_restarts times; returns their names.

    Three Airflow processes starting on one SQLite file can trip over each other's writes
    ("database is locked") and exit; a second start then succeeds.
    """
    dead = [n for n in names if _pid(cfg, n) is None]
    for name in dead:
        if restarts.get(name, 0) >= max_restarts:
            stop(cfg, quiet=True)
            raise AirflowEnvError(f"{name} exited {restarts[name] + 1} times; last lines of "
                                  f"{home(cfg) / 'logs' / (name + '.log')}:\n{_log_tail(cfg, name)}")
        restarts[name] = restarts.get(name, 0) + 1
        print(f"[airflow] {name} exited; restarting it ({restarts[name]}/{max_restarts}). Its log ends:\n"
              f"{_log_tail(cfg, name, 5)}", flush=True)
        time.sleep(2.0)
        _launch(cfg, name, _service_commands(port)[name], env)
    return dead


def start(cfg: config_mod.Config, timeout: float = 180.0) -> int:
    """Start api-server, then scheduler, then dag-processor (each in its own process group)."""
    if all(running(cfg).values()):
        port = _recorded_port(home(cfg))
        print(f"[airflow] already running (api-server 127.0.0.1:{port})")
        return port
    stop(cfg, quiet=True)
    port = free_port()
    (_run_dir(cfg) / "api-server.port").write_text(str(port))
    env = airflow_env(cfg, api_port=port)
    # The scheduler's log server (default 8793, every interface): a free port of its own.
    env.setdefault("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
    init(cfg, env)
    commands = _service_commands(port)
    restarts: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    # One at a time, the api-server first (the others talk to it): fewer concurrent SQLite writers.
    for i, name in enumerate(SERVICES):
        _launch(cfg, name, commands[name], env)
        settle = time.monotonic() + (0 if name == "api-server" else 3.0)
        while time.monotonic() < deadline:
            revive(cfg, env, port, restarts, names=SERVICES[: i + 1])
            h = _health(port)
            if h and h.get("metadatabase", {}).get("status") == "healthy" and time.monotonic() >= settle:
                break
            time.sleep(1.0)
        else:
            stop(cfg, quiet=True)
            raise AirflowEnvError(f"api-server did not answer on 127.0.0.1:{port} within {timeout:.0f}s; "
                                  f"see {home(cfg) / 'logs'}")
    print(f"[airflow] api-server http://127.0.0.1:{port}, scheduler, dag-processor running "
          f"(logs {home(cfg) / 'logs'})", flush=True)
    return port


def stop(cfg: config_mod.Config, quiet: bool = False, timeout: float = 30.0) -> None:
    """SIGTERM each service's process group (the ones start() made), SIGKILL after timeout."""
    for name in reversed(SERVICES):
        pid = _pid(cfg, name)
        pidfile = _run_dir(cfg) / f"{name}.pid"
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pidfile.unlink(missing_ok=True)
        if not quiet:
            print(f"[airflow] {name} stopped (pid {pid})", flush=True)
    (_run_dir(cfg) / "api-server.port").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of another parent still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def status(cfg) -> int:
    state = running(cfg)
    port = _recorded_port(home(cfg))
    for name, pid in state.items():
        print(f"{name}: {'running (pid %d)' % pid if pid else 'not running'}")
    if port:
        print(f"api-server health: {_health(port)}")
    return 0 if all(state.values()) else 3


# --- backfill -----------------------------------------------------------------------------

def _orm(env: dict[str, str]):
    """Import Airflow's ORM in this process, configured by env (only once per process)."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise AirflowEnvError("Airflow is already imported with another AIRFLOW_HOME in this process")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AIRFLOW", "METAEMB"))})
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    return Backfill, DagRun, TaskInstance, create_session


def _expected_dates(from_date: dt.date, to_date: dt.date) -> list[dt.date]:
    return [from_date + dt.timedelta(days=i) for i in range((to_date - from_date).days + 1)]


def backfill(cfg: config_mod.Config, from_date: dt.date, to_date: dt.date, *, dag_id: str = wiring.DAILY_DAG_ID,
             timeout: float = 3600.0, reprocess: str = "completed") -> dict[str, str]:
    """`airflow backfill create` for [from, to], wait for every run, return {date: state}."""
    started_here = not all(running(cfg).values())
    port = start(cfg) if started_here else _recorded_port(home(cfg))
    env = airflow_env(cfg, api_port=port)
    t0 = time.perf_counter()
    try:
        Backfill, DagRun, TaskInstance, create_session = _orm(env)
        from sqlalchemy import func, select

        # The dag-processor must have serialized the DAG before a backfill can be created.
        args = ["backfill", "create", "--dag-id", dag_id, "--from-date", from_date.isoformat(),
                "--to-date", to_date.isoformat(), "--reprocess-behavior", reprocess,
                "--max-active-runs", "1"]  # one date at a time: they rewrite the same Delta tables
        # The scheduler starts no run of a paused DAG, backfill runs included: unpause for the
        # backfill, pause again after if it was paused.
        was_paused = _set_paused(cfg, env, dag_id, False)
        deadline = time.monotonic() + 180
        backfill_id = None
        while backfill_id is None:
            before = _latest_backfill_id(create_session, Backfill, dag_id)
            proc = airflow(cfg, *args, env=env, check=False, capture=True)
            out = (proc.stdout or "") + (proc.stderr or "")
            backfill_id = _latest_backfill_id(create_session, Backfill, dag_id)
            if proc.returncode == 0 and backfill_id != before:
                break
            low = out.lower()
            if backfill_id != before and any(s in low for s in LOCKED):
                # Created, then a lock error: keep it only if all its runs exist, else drop it.
                n = _count_runs(create_session, DagRun, backfill_id, func, select)
                if n == len(_expected_dates(from_date, to_date)):
                    break
                _drop_backfill(create_session, Backfill, DagRun, backfill_id)
            backfill_id = None
            retriable = any(s in low for s in LOCKED) or "could not find dag" in low or "not found" in low
            if not retriable or time.monotonic() > deadline:
                raise AirflowEnvError(f"airflow {' '.join(args)} failed (exit {proc.returncode}):\n{out[-3000:]}")
            why = "metadata DB locked" if any(s in low for s in LOCKED) else "DAG not parsed yet"
            print(f"[airflow] backfill create: {why}; retrying", flush=True)
            time.sleep(3.0)
        print(f"[airflow] backfill {backfill_id} created for {dag_id} {from_date}..{to_date}", flush=True)
        restarts: dict[str, int] = {}
        states = _wait_backfill(create_session, Backfill, DagRun, backfill_id, timeout,
                                watchdog=lambda: revive(cfg, env, port, restarts))
        if was_paused:
            _set_paused(cfg, env, dag_id, True)
    finally:
        if started_here:
            stop(cfg)
    seconds = time.perf_counter() - t0
    for day, state in states.items():
        print(f"  {day}: {state}")
    ok = sum(s == "success" for s in states.values())
    print(f"[airflow] backfill {dag_id} {from_date}..{to_date}: {ok}/{len(states)} succeeded in {seconds:.0f}s",
          flush=True)
    return states


def _set_paused(cfg, env, dag_id: str, paused: bool, timeout: float = 180.0) -> bool:
    """Pause/unpause (waiting for the dag-processor to register the DAG); returns the old state."""
    from sqlalchemy import select

    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout
    while True:
        with create_session() as s:
            was = s.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id))
        if was is not None:
            break
        if time.monotonic() > deadline:
            raise AirflowEnvError(f"DAG {dag_id} not registered after {timeout:.0f}s (see dag-processor.log)")
        time.sleep(2.0)
    if was != paused:
        _with_lock_retry(lambda: airflow(cfg, "dags", "pause" if paused else "unpause", dag_id, env=env,
                                         capture=True), "dags pause/unpause")
        print(f"[airflow] {dag_id} {'paused' if paused else 'unpaused'}", flush=True)
    return bool(was)


def _latest_backfill_id(create_session, Backfill, dag_id: str):
    from sqlalchemy import func, select

    with create_session() as s:
        return s.scalar(select(func.max(Backfill.id)).where(Backfill.dag_id == dag_id))


def _count_runs(create_session, DagRun, backfill_id, func, select) -> int:
    with create_session() as s:
        return s.scalar(select(func.count()).select_from(DagRun).where(DagRun.backfill_id == backfill_id)) or 0


def _drop_backfill(create_session, Backfill, DagRun, backfill_id) -> None:
    from sqlalchemy import delete

    from airflow.models.backfill import BackfillDagRun

    with create_session() as s:
        s.execute(delete(BackfillDagRun).where(BackfillDagRun.backfill_id == backfill_id))
        s.execute(delete(DagRun).where(DagRun.backfill_id == backfill_id))
        s.execute(delete(Backfill).where(Backfill.id == backfill_id))


def _wait_backfill(create_session, Backfill, DagRun, backfill_id, timeout: float,
                   watchdog=lambda: None) -> dict[str, str]:
    """Poll until the backfill is complete; {date: run state, or why no run was made}.

    watchdog() runs every poll (it relaunches a service that died, so a crashed scheduler
    does not leave the backfill waiting out its timeout)."""
    from sqlalchemy import select

    from airflow.models.backfill import BackfillDagRun

    deadline = time.monotonic() + timeout
    last = None
    while True:
        watchdog()
        try:
            with create_session() as s:
                done = s.scalar(select(Backfill.completed_at).where(Backfill.id == backfill_id))
                rows = s.execute(
                    select(BackfillDagRun.logical_date, BackfillDagRun.exception_reason, DagRun.state)
                    .outerjoin(DagRun, DagRun.id == BackfillDagRun.dag_run_id)
                    .where(BackfillDagRun.backfill_id == backfill_id)
                    .order_by(BackfillDagRun.sort_ordinal)).all()
        except Exception as e:  # noqa: BLE001 - a locked SQLite read: try again
            if any(x in str(e).lower() for x in LOCKED):
                time.sleep(2.0)
                continue
            raise
        states = {}
        for logical_date, reason, state in rows:
            key = logical_date.date().isoformat() if logical_date else "?"
            states[key] = str(getattr(state, "value", state)) if state is not None else \
                f"not-run({str(getattr(reason, 'value', reason)).replace(' ', '-')})"
        summary = ", ".join(f"{k}={v}" for k, v in sorted(_counts(states).items()))
        if summary != last:
            print(f"[airflow] backfill {backfill_id}: {summary or 'no runs yet'}", flush=True)
            last = summary
        terminal = all(v in ("success", "failed") or v.startswith("not-run") for v in states.values())
        if done is not None and terminal:
            return states
        if time.monotonic() > deadline:
            raise AirflowEnvError(f"backfill {backfill_id} not complete after {timeout:.0f}s: {states}")
        time.sleep(3.0)


def _counts(states: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in states.values():
        out[v] = out.get(v, 0) + 1
    return out


# --- command line -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/airflow.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="metaemb TOML config (default: $METAEMB_CONFIG / ./metaemb.toml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print export lines for this environment")
    sub.add_parser("init", help="airflow db migrate + pool (idempotent)")
    t = sub.add_parser("dags-test", help="airflow dags test DAG DATE, in-process")
    t.add_argument("date")
    t.add_argument("dag_id", nargs="?", default=wiring.DAILY_DAG_ID)
    sub.add_parser("start", help="start api-server, scheduler, dag-processor on loopback")
    sub.add_parser("stop", help="stop them")
    sub.add_parser("status", help="are they running")
    b = sub.add_parser("backfill", help="airflow backfill create FROM..TO, wait, report per date")
    b.add_argument("from_date", type=dt.date.fromisoformat)
    b.add_argument("to_date", type=dt.date.fromisoformat)
    b.add_argument("--dag-id", default=wiring.DAILY_DAG_ID)
    b.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for completion")
    b.add_argument("--reprocess-behavior", default="completed", choices=("none", "failed", "completed"),
                   help="dates that already ran: rerun all (completed, the default), failed only, or none")
    a = sub.add_parser("airflow", help="run any airflow command in this environment")
    a.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config)
    if args.config:
        cfg_path = str(Path(args.config).resolve())
        os.environ["METAEMB_CONFIG"] = cfg_path
    try:
        if args.cmd == "env":
            env = airflow_env(cfg)
            keys = sorted(k for k in env if k.startswith(("AIRFLOW", "METAEMB")) and k != "AIRFLOW__API_AUTH__JWT_SECRET")
            for k in keys + ["PATH"]:
                print(f"export {k}={shlex.quote(env[k])}")
            return 0
        if args.cmd == "init":
            init(cfg)
            return 0
        if args.cmd == "dags-test":
            return dags_test(cfg, args.date, args.dag_id)
        if args.cmd == "start":
            start(cfg)
            return 0
        if args.cmd == "stop":
            stop(cfg)
            return 0
        if args.cmd == "status":
            return status(cfg)
        if args.cmd == "backfill":
            # On SIGTERM still stop the services this command started (the finally in backfill()).
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            states = backfill(cfg, args.from_date, args.to_date, dag_id=args.dag_id, timeout=args.timeout,
                              reprocess=args.reprocess_behavior)
            return 0 if states and all(s == "success" for s in states.values()) else 1
        if args.cmd == "airflow":
            return airflow(cfg, *args.args, check=False).returncode
    except AirflowEnvError as e:
        print(f"[airflow] error: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
