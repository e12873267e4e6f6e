"""Airflow for metaemb on one machine: environment, metadata DB, local services, backfill.

    metaemb airflow [--config PATH] COMMAND ...      (scripts/airflow.sh is the same command)

    env                      print `export ...` lines (eval "$(metaemb airflow env)")
    init                     airflow db migrate (idempotent) + the [airflow] pool
    dags-test DATE [DAG]     airflow dags test metaemb_daily DATE (in-process, no services)
    start | stop | status    `airflow standalone` (api-server, scheduler, dag-processor,
                             triggerer) on a free loopback port, in the background
    backfill FROM TO         a backfill of exactly [FROM, TO] through Airflow's REST API; waits
                             and reports each date's state (starts the local services first when
                             no api-server answers, and stops them after in that case)
    ARGS...                  any other airflow command in this environment

Environment (each only when not already set, so a deployment's own settings win):
AIRFLOW_HOME = [airflow] home (var/airflow), DAGs folder = dags/, no examples, LocalExecutor,
SQLite metadata under AIRFLOW_HOME (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN selects e.g.
Postgres; the URL and its password come from the environment, never from the config file),
the Spark connection AIRFLOW_CONN_<[airflow] spark_conn_id> with [spark] master, the venv's
bin/ on PATH (spark-submit), METAEMB_CONFIG. A deployment's api-server is found through
AIRFLOW__API__BASE_URL (token: $METAEMB_AIRFLOW_TOKEN).
"""

from __future__ import annotations

import argparse
import contextlib
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from metaemb import airflow_dags as wiring
from core import config as config_mod

LOCKED = ("database is locked", "could not obtain lock", "lock timeout")
COMPONENTS = ("scheduler", "dag_processor", "triggerer")
SUBCOMMANDS = ("env", "init", "dags-test", "start", "stop", "status", "backfill")


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
        for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
            defaults[f"AIRFLOW__DATABASE__{key}"] = f"{wiring.__name__}.SQLITE_CONNECT_ARGS"
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


# --- local services: `airflow standalone` ---------------------------------------------------

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
                                start_new_session=True, cwd=str(wiring.PROJECT_ROOT))
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
    port = _recorded_port(home(cfg))
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
    port = _recorded_port(home(cfg))
    pid = standalone_pid(cfg)
    print(f"airflow standalone: {'running (pid %d)' % pid if pid else 'not running'}")
    if pid and port:
        h = health(f"http://127.0.0.1:{port}")
        print(f"api-server http://127.0.0.1:{port}: " + (", ".join(unhealthy(h)) + " unhealthy" if unhealthy(h)
                                                         else "all components healthy"))
    return 0 if pid else 3


# --- REST API -------------------------------------------------------------------------------

class Api:
    """The few calls of Airflow's REST API (/api/v2) that a backfill needs."""

    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token

    @classmethod
    def connect(cls, url: str, cfg: config_mod.Config) -> "Api":
        token = os.environ.get("METAEMB_AIRFLOW_TOKEN") or cls._token(url, home(cfg))
        return cls(url, token)

    @staticmethod
    def _token(url: str, h: Path) -> str | None:
        """A JWT from the simple auth manager: the local standalone's generated admin password."""
        passwords = h / "simple_auth_manager_passwords.json.generated"
        if not passwords.exists():
            return None
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        req = urllib.request.Request(f"{url}/auth/token", method="POST",
                                     data=json.dumps({"username": user, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
             attempts: int = 40) -> dict:
        """One request; retried (every 3 s, `attempts` tries) while the metadata DB is locked or the
        server is briefly away. A 5xx rolled its transaction back, so a retry is safe."""
        url = f"{self.url}/api/v2{path}" + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(attempts):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")
                retriable = e.code >= 500 or any(s in detail.lower() for s in LOCKED)
                if not retriable or attempt + 1 == attempts:
                    raise AirflowEnvError(f"{method} {path}: HTTP {e.code}: {detail[:2000]} (the api-server's "
                                          "log has the cause)") from None
                why = f"HTTP {e.code}"
            except OSError as e:
                if attempt + 1 == attempts:
                    raise AirflowEnvError(f"{method} {path}: {e}") from None
                why = str(e)
            if attempts > 1:
                print(f"[airflow] {method} {path}: {why[:200]}; retrying in 3s ({attempt + 1}/{attempts})", flush=True)
            time.sleep(3.0)
        raise AssertionError("unreachable")


# --- backfill -------------------------------------------------------------------------------

def _api_url(cfg: config_mod.Config) -> str | None:
    """An answering api-server: the deployment's (AIRFLOW__API__BASE_URL), else the local one."""
    port = _recorded_port(home(cfg))
    for url in (os.environ.get("AIRFLOW__API__BASE_URL"), port and f"http://127.0.0.1:{port}"):
        if url and health(url.rstrip("/")) is not None:
            return url.rstrip("/")
    return None


def _midnight(d: dt.date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def backfill(cfg: config_mod.Config, from_date: dt.date, to_date: dt.date, *, dag_id: str = wiring.DAILY_DAG_ID,
             timeout: float = 3600.0, reprocess: str = "completed") -> dict[str, str]:
    """Backfill exactly [from, to] (one run at a time), wait for every run; {date: state}."""
    url = _api_url(cfg)
    started_here = url is None
    if started_here:
        url = f"http://127.0.0.1:{start(cfg)}"
    t0 = time.perf_counter()
    try:
        api = Api.connect(url, cfg)
        was_paused = _set_paused(api, dag_id, False)
        try:
            states = _run_backfill(api, dag_id, from_date, to_date, reprocess, timeout)
        finally:
            if was_paused:
                _set_paused(api, dag_id, True)
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


def _set_paused(api: Api, dag_id: str, paused: bool, timeout: float = 180.0) -> bool:
    """Pause/unpause (waiting for the dag-processor to register the DAG); returns the old state.

    The scheduler runs no run of a paused DAG, backfill runs included.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            was = api.call("GET", f"/dags/{dag_id}", attempts=1)["is_paused"]
            break
        except AirflowEnvError as e:
            if time.monotonic() > deadline:
                raise AirflowEnvError(f"DAG {dag_id} not registered after {timeout:.0f}s: {e}") from None
            time.sleep(2.0)
    if was != paused:
        api.call("PATCH", f"/dags/{dag_id}", {"is_paused": paused})
        print(f"[airflow] {dag_id} {'paused' if paused else 'unpaused'}", flush=True)
    return bool(was)


def _run_backfill(api: Api, dag_id: str, from_date: dt.date, to_date: dt.date, reprocess: str,
                  timeout: float) -> dict[str, str]:
    body = {"dag_id": dag_id, "from_date": _midnight(from_date), "to_date": _midnight(to_date),
            "reprocess_behavior": reprocess,
            "max_active_runs": 1}  # one date at a time: they rewrite the same Delta tables
    dates = [r["logical_date"][:10] for r in api.call("POST", "/backfills/dry_run", body)["backfills"]]
    created = dt.datetime.now(dt.timezone.utc)
    backfill_id = api.call("POST", "/backfills", body)["id"]
    print(f"[airflow] backfill {backfill_id} created for {dag_id}: {len(dates)} date(s) "
          f"{', '.join(dates)}", flush=True)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        done = api.call("GET", f"/backfills/{backfill_id}").get("completed_at")
        runs = _runs(api, dag_id, from_date, to_date)
        states = {d: runs.get(d, {}).get("state", "not-created") for d in dates}
        summary = ", ".join(f"{k}={v}" for k, v in sorted(_counts(states).items()))
        if summary != last:
            print(f"[airflow] backfill {backfill_id}: {summary}", flush=True)
            last = summary
        if done and all(s in ("success", "failed") for s in states.values()):
            break
        if time.monotonic() > deadline:
            raise AirflowEnvError(f"backfill {backfill_id} not complete after {timeout:.0f}s: {states}")
        time.sleep(5.0)
    for day, state in states.items():
        if state == "failed":
            print(f"[airflow] {day} failed: {_failed_tasks(api, dag_id, runs[day]['dag_run_id'])}", flush=True)
    _report_other_runs(api, dag_id, created, dates)
    return states


def _runs(api: Api, dag_id: str, from_date: dt.date, to_date: dt.date) -> dict[str, dict]:
    """This DAG's backfill runs with a logical date in [from, to], by date."""
    query = {"run_type": "backfill", "logical_date_gte": _midnight(from_date),
             "logical_date_lte": _midnight(to_date), "limit": 100}
    runs = api.call("GET", f"/dags/{dag_id}/dagRuns", query=query)["dag_runs"]
    return {r["logical_date"][:10]: r for r in runs if r.get("logical_date")}


def _failed_tasks(api: Api, dag_id: str, run_id: str) -> str:
    tis = api.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
    failed = [f"{t['task_id']} (try {t.get('try_number')}, {t['state']})"
              for t in tis["task_instances"] if t["state"] in ("failed", "upstream_failed")]
    return ", ".join(failed) + "; task logs under $AIRFLOW_HOME/logs/dag_id=" + dag_id


def _report_other_runs(api: Api, dag_id: str, since: dt.datetime, dates: list[str]) -> None:
    """Say so when the scheduler ran anything besides the backfill meanwhile (a live schedule)."""
    runs = api.call("GET", f"/dags/{dag_id}/dagRuns", query={"run_after_gte": since.isoformat(), "limit": 100})
    others = [r["dag_run_id"] for r in runs["dag_runs"] if r["run_type"] != "backfill"]
    if others:
        print(f"[airflow] note: while the DAG was unpaused for the backfill its schedule also ran "
              f"{', '.join(others)} (not part of {', '.join(dates)}); set [airflow] end_date to keep "
              f"the scheduler to dates your data covers", flush=True)


def _counts(states: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in states.values():
        out[v] = out.get(v, 0) + 1
    return out


# --- command line -------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaemb airflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="metaemb TOML config (default: $METAEMB_CONFIG / ./metaemb.toml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print export lines for this environment")
    sub.add_parser("init", help="airflow db migrate + pool (idempotent)")
    t = sub.add_parser("dags-test", help="airflow dags test DAG DATE, in-process")
    t.add_argument("date")
    t.add_argument("dag_id", nargs="?", default=wiring.DAILY_DAG_ID)
    sub.add_parser("start", help="start `airflow standalone` on a free loopback port")
    sub.add_parser("stop", help="stop it")
    sub.add_parser("status", help="is it running, are its components healthy")
    b = sub.add_parser("backfill", help="backfill exactly FROM..TO, wait, report per date")
    b.add_argument("from_date", type=dt.date.fromisoformat)
    b.add_argument("to_date", type=dt.date.fromisoformat)
    b.add_argument("--dag-id", default=wiring.DAILY_DAG_ID)
    b.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for completion")
    b.add_argument("--reprocess-behavior", default="completed", choices=("none", "failed", "completed"),
                   help="dates that already ran: rerun all (completed, the default), failed only, or none")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    if argv[:1] == ["--config"] and len(argv) > 1:
        config, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--config="):
        config, argv = argv[0].split("=", 1)[1], argv[1:]
    if argv and argv[0] == "airflow":  # the older spelling: `airflow.sh airflow ARGS`
        argv = argv[1:]
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        cfg = _load(config)
        return airflow(cfg, *argv, check=False).returncode  # any airflow command, this environment
    args = parser().parse_args((["--config", config] if config else []) + argv)
    cfg = _load(args.config)
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
        # backfill: on SIGTERM still stop the services this command started (backfill's finally).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        states = backfill(cfg, args.from_date, args.to_date, dag_id=args.dag_id, timeout=args.timeout,
                          reprocess=args.reprocess_behavior)
        return 0 if states and all(s == "success" for s in states.values()) else 1
    except AirflowEnvError as e:
        print(f"[airflow] error: {e}", file=sys.stderr)
        return 1


def _load(config: str | None) -> config_mod.Config:
    if config:
        os.environ["METAEMB_CONFIG"] = str(Path(config).resolve())
    return config_mod.load(config)


if __name__ == "__main__":
    sys.exit(main())
