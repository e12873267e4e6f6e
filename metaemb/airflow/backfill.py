"""A backfill of exactly the dates FROM..TO, one run at a time, through Airflow's REST API: waits
for every run and reports each date's state. Starts the local services first when no api-server
answers (and stops them after in that case)."""

from __future__ import annotations

import datetime as dt
import os
import time
import urllib.parse

from core import config as config_mod
from metaemb.airflow import services
from metaemb.airflow.api import Api
from metaemb.airflow.env import DAILY_DAG_ID, AirflowEnvError, home, recorded_port


def _api_url(cfg: config_mod.Config) -> str | None:
    """An answering api-server: the deployment's (AIRFLOW__API__BASE_URL), else the local one."""
    port = recorded_port(home(cfg))
    for url in (os.environ.get("AIRFLOW__API__BASE_URL"), port and f"http://127.0.0.1:{port}"):
        if url and services.health(url.rstrip("/")) is not None:
            return url.rstrip("/")
    return None


def _midnight(d: dt.date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def backfill(cfg: config_mod.Config, from_date: dt.date, to_date: dt.date, *, dag_id: str = DAILY_DAG_ID,
             timeout: float = 3600.0, reprocess: str = "completed") -> dict[str, str]:
    """Backfill exactly [from, to] (one run at a time), wait for every run; {date: state}."""
    url = _api_url(cfg)
    started_here = url is None
    if started_here:
        url = f"http://127.0.0.1:{services.start(cfg)}"
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
            services.stop(cfg)
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

