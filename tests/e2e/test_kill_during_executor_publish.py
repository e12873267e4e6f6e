"""kill -9 of a publish whose executors write the day ([feast] write_from = "spark", a real
Redis): the stage's real spark-submit is parked in a Python worker after its first batch into
the namespace no reader looks at, and its whole process group gets SIGKILL. Readers still get
the whole previous day; the rerun completes, the check passes and the new day is served whole."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from core import config as config_mod
from metaemb.daily import run_daily
from pipelines import labeled
from project_helpers import kill9_stage_when_paused, project_raw, write_config
from serving import feast_repo, slots

pytestmark = [pytest.mark.spark, pytest.mark.services]

D1, D2 = dt.date(2026, 10, 26), dt.date(2026, 10, 27)


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

    during = kill9_stage_when_paused(cfg, "publish", D2, "redis:mid-write", tmp_path / "publish.log",
                                     while_paused=lambda: online(cfg, keys))
    after = online(cfg, keys)
    for seen in (during, after):
        assert seen.keys() == day1.keys() and all(np.array_equal(seen[k], day1[k]) for k in day1), \
            "readers saw rows of the killed publish"
    assert slots.served_day(feast_repo.feature_store(cfg)) == D1

    results = run_daily(spark, cfg, D2, inputs, stages=("publish", "check"), **quiet)  # what Airflow's retry does
    assert results[0]["rows"] > 100 and results[1]["online"] == f"published; online serves {D2}"
    day2 = online(cfg, keys)
    assert day2.keys() and any(not np.array_equal(day2[k], day1.get(k, day2[k] + 1)) for k in day2)
