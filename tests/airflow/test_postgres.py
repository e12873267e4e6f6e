"""Airflow on a real PostgreSQL (Debian's package): initdb in a temp dir on a free loopback
port (as the postgres user when the tests run as root: initdb refuses root), `airflow db
migrate` on it, then a real `airflow dags test metaemb_daily` whose metadata lands there."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from project_helpers import airflow_sh, config_for, table_counts, task_logs
from core import config as config_mod
from metaemb.testing.loopback import free_port
from core import tables

pytestmark = [pytest.mark.spark, pytest.mark.services]

PG_DATE = dt.date(2026, 10, 30)
STAGES = ["labeled", "samples", "embed", "publish", "check"]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        exe = version / "bin" / name
        if exe.exists():
            return str(exe)
    pytest.fail(f"PostgreSQL's {name} not found: apt-get install postgresql (Debian's package)")


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>; yields a SQLAlchemy URL."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="metaemb-pg-"))  # /tmp: reachable by the postgres user
    password = secrets.token_hex(16)
    pwfile = data / "pw"
    pwfile.write_text(password)
    if as_postgres:
        shutil.chown(data, "postgres")
        shutil.chown(pwfile, "postgres")
    os.chmod(pwfile, 0o600)
    port = free_port()
    run = lambda *cmd, **kw: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, text=True, **kw)  # noqa: E731
    try:
        run(_pg_bin("initdb"), "-D", str(data / "db"), "-U", "airflow", "--pwfile", str(pwfile),
            "-A", "scram-sha-256", "-E", "UTF8")
        run(_pg_bin("pg_ctl"), "-D", str(data / "db"), "-l", str(data / "postgres.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"could not start PostgreSQL: {e.cmd}\n{e.stdout}\n{e.stderr}")
    try:
        import psycopg2

        for _ in range(50):
            try:
                con = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", password=password,
                                       dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE airflow")
        con.close()
        yield {"url": f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow",
               "host": "127.0.0.1", "port": port, "user": "airflow", "password": password}
    finally:
        subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.services
def test_airflow_on_postgres_migrate_and_daily_run(postgres, airflow_project, spark):
    import psycopg2

    cfg_path = config_for(airflow_project, "postgres")
    cfg = config_mod.load(cfg_path)
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres["url"]}
    proc = airflow_sh(cfg_path, "dags-test", PG_DATE.isoformat(), env=env, check=False, timeout=1800)
    print(f"airflow on Postgres: db migrate + dags test {PG_DATE}: exit {proc.returncode} in {proc.seconds:.0f}s")
    assert postgres["password"] not in proc.stdout + proc.stderr, "the Postgres password was printed"
    home = cfg.path(cfg.airflow.home)
    assert not (home / "airflow.db").exists(), "Airflow used SQLite, not the Postgres URL from the environment"
    detail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{task_logs(home, 'metaemb_daily')}"
    assert "metadata DB ready (postgresql+psycopg2://127.0.0.1:" in proc.stdout, detail

    con = psycopg2.connect(host=postgres["host"], port=postgres["port"], user=postgres["user"],
                           password=postgres["password"], dbname="airflow")
    try:
        cur = con.cursor()
        cur.execute("SELECT version_num FROM alembic_version")
        assert cur.fetchone(), "airflow db migrate did not stamp the Postgres database"
        cur.execute("SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr "
                    "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
                    "WHERE dr.dag_id = 'metaemb_daily' AND dr.logical_date::date = %s", (PG_DATE,))
        states = dict(cur.fetchall())
        cur.execute("SELECT pool, slots FROM slot_pool WHERE pool = %s", (cfg.airflow.pool,))
        pool = cur.fetchone()
    finally:
        con.close()
    assert states == {s: "success" for s in STAGES}, f"{states}\n{detail}"
    assert proc.returncode == 0, detail
    assert pool == (cfg.airflow.pool, 1)

    keys = list(cfg.data.task_key)
    rows, distinct = table_counts(spark, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, keys).get(PG_DATE, (0, 0))
    assert rows > 0 and rows == distinct
