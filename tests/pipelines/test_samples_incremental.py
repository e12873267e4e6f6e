"""Incremental task_samples (yesterday's samples + today's events, minus what left the window)
equal the full regroup of the window: every task, every array; and the full regroup is chosen
whenever yesterday's samples cannot be built on."""

from __future__ import annotations

import pytest

import dataclasses
import datetime as dt

from metaemb.datasets.synthetic import SyntheticSpec, generate
from pipelines import labeled, samples
from project_helpers import make_config

pytestmark = pytest.mark.spark

END = dt.date(2026, 10, 30)
YESTERDAY = END - dt.timedelta(days=1)


def rows_by_task(df) -> dict[str, dict]:
    return {r["user_id"]: r.asDict() for r in df.collect()}


def test_incremental_samples_equal_the_full_regroup(spark, tmp_path):
    generate(tmp_path / "data", SyntheticSpec(users=300, days=6, end_date=END, mean_events_per_user=6, seed=3),
             progress=lambda _: None)
    cfg = make_config(tmp_path, data={"interactions": str(tmp_path / "data" / "interactions.parquet"),
                                      "entity_features": str(tmp_path / "data" / "entity_features.parquet")},
                      pipeline={"window_days": 3, "cap_samples": 4})
    inputs = labeled.resolve_inputs(cfg)
    labeled.run(spark, cfg, inputs, YESTERDAY)
    first = samples.run(spark, cfg, YESTERDAY)
    assert first["build"].startswith("full: no task_samples for")
    labeled.run(spark, cfg, inputs, END)

    assert samples.full_regroup_reason(cfg, END) is None
    incremental = rows_by_task(samples.build_incremental(spark, cfg, END))
    full = rows_by_task(samples.build(spark, cfg, END))
    before = rows_by_task(samples.build(spark, cfg, YESTERDAY))
    assert incremental.keys() == full.keys() and len(full) > 200
    assert set(before) - set(full), "the data must have tasks whose events all left the window"
    assert set(full) - set(before), "the data must have tasks new today"
    assert any(r["n_samples"] == 4 for r in full.values()), "the cap must bite"
    for task, want in full.items():
        assert incremental[task] == want, task

    assert samples.run(spark, cfg, END)["build"] == "incremental"

    # Cases that need the full regroup.
    assert "window/cap changed" in samples.full_regroup_reason(
        dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, cap_samples=5)), END)
    labeled.run(spark, cfg, inputs, YESTERDAY)  # a rerun rewrites a window date after yesterday's samples
    assert "rewritten" in samples.full_regroup_reason(cfg, END)
    assert "no task_samples for" in samples.full_regroup_reason(cfg, END + dt.timedelta(days=2))
