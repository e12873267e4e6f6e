"""kill -9 of a publish whose executors write the day ([feast] write_from = "spark", a real
Redis): the stage's real spark-submit is parked in a Python worker after its first batch into
the namespace no reader looks at, and its whole process group gets SIGKILL. Readers still get
the whole previous day; the rerun completes, the check passes and the new day is served whole."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest

from core import config as config_mod
from metaemb.daily import run_daily
from metaemb.jobs import submit_command
from pipelines import labeled
from pipelines.faults import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from project_helpers import project_raw, write_config
from serving import feast_repo, slots

pytestmark = [pytest.mark.spark, pytest.mark.services]

D1, D2 = dt.date(2026, 10, 26), dt.date(2026, 10, 27)
SPARK_SUBMIT = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def online(cfg, keys: list[str]) -> dict[str, np.ndarray]:
    df = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])
    return {r.user_id: np.asarray(r.embedding, np.float32) for r in df.itertuples() if r.embedding is not None}


def test_kill9_while_executors_write_keeps_the_previous_day(airflow_project, spark, redis_server, tmp_path):
    raw = project_raw(airflow_project, pipeline={"storage_root": str(tmp_path / "lake")},
                      feast={"project": "killex", "online_store": "redis", "redis_connection": redis_server,
                             "write_from": "spark", "write_batch_rows": 20,
                             "registry_path": str(tmp_path / "feast" / "registry.db")})
    cfg = config_mod.load(write_config(tmp_path / "metaemb.toml", raw))
    inputs = labeled.resolve_inputs(cfg)
    quiet = dict(progress=lambda _: None)
    run_daily(spark, cfg, D1, inputs, **quiet)
    run_daily(spark, cfg, D2, inputs, stages=("labeled", "samples", "embed"), **quiet)
    store = feast_repo.feature_store(cfg)
    keys = [f"{u}" for u in range(1, 201)]
    day1 = online(cfg, keys)
    assert len(day1) > 100 and slots.served_day(store) == D1

    marker = tmp_path / "paused"
    env = {**os.environ, PAUSE_AT_ENV: "redis:mid-write", PAUSE_MARKER_ENV: str(marker)}
    log = (tmp_path / "publish.log").open("w")
    proc = subprocess.Popen(submit_command(cfg, "publish", D2, SPARK_SUBMIT), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "publish.log").read_text()[-3000:]
            assert time.time() < deadline, "the executors never wrote their first batch"
            time.sleep(0.2)
        during = online(cfg, keys)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    after = online(cfg, keys)
    for seen in (during, after):
        assert seen.keys() == day1.keys() and all(np.array_equal(seen[k], day1[k]) for k in day1), \
            "readers saw rows of the killed publish"
    assert slots.served_day(feast_repo.feature_store(cfg)) == D1

    results = run_daily(spark, cfg, D2, inputs, stages=("publish", "check"), **quiet)  # what Airflow's retry does
    assert results[0]["rows"] > 100 and results[1]["online"] == f"published; online serves {D2}"
    day2 = online(cfg, keys)
    assert day2.keys() and any(not np.array_equal(day2[k], day1.get(k, day2[k] + 1)) for k in day2)
