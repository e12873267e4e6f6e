"""Version-safe rollout on the real pipeline (in-process, the shared Spark session): a retrain
with another seed, the next date switches every online row to the new version in one publish,
`score` with the old artifact refuses, `status` names the switch; a rollback re-runs the newest
date with the previous version pinned; an older date stays skipped."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest

from project_helpers import project_raw, write_config
from core import config as config_mod
from metaemb.daily import run_daily
from metaemb.status import status
from pipelines import labeled
from pipelines import train as train_job
from serving import day
from serving import feast_repo
from serving.onnx_runtime import load_for_version
from serving.publish import publish
from serving.publish_log import publish_log
from serving.score import ScoreError, score

pytestmark = pytest.mark.spark

D1, D2 = dt.date(2026, 10, 27), dt.date(2026, 10, 28)
QUIET = dict(progress=lambda _: None)


def rollout_config(root, tmp_path) -> config_mod.Config:
    """The shared project's data, a copy of its model folder (retraining moves LATEST), and
    its own lake and Feast store."""
    shutil.copytree(root / "models", tmp_path / "models")
    raw = project_raw(root, pipeline={"storage_root": str(tmp_path / "lake")},
                      model={"checkpoint_dir": str(tmp_path / "models")},
                      feast={"project": "rollout", "sqlite_path": str(tmp_path / "feast" / "online.db"),
                             "registry_path": str(tmp_path / "feast" / "registry.db")})
    return config_mod.load(write_config(tmp_path / "metaemb.toml", raw))


def online_versions(cfg, keys: list[str]) -> pd.Series:
    """model_version per task key online (None: no row)."""
    df = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])
    return df.set_index("user_id")["model_version"].where(df["embedding"].notna().to_numpy())


def score_rows(cfg, version: str, users: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user_id": users, "item_id": rng.integers(0, 1000, len(users))})
    for c in load_for_version(cfg, version).context_columns:
        df[c] = rng.normal(size=len(users))
    return df


def status_text(cfg) -> str:
    lines = []
    status(cfg, expect_date=D2, progress=lines.append)
    return "\n".join(lines)


def test_retrain_rollout_and_rollback(airflow_project, spark, tmp_path):
    cfg = rollout_config(airflow_project, tmp_path)
    inputs = labeled.resolve_inputs(cfg)
    old = (tmp_path / "models" / "LATEST").read_text().strip()
    assert run_daily(spark, cfg, D1, inputs, **QUIET)[3]["rows"] > 0
    d1_keys = day.read_partition(cfg, D1, columns=["user_id"])["user_id"].to_pylist()

    # Retrain on D1's window with another seed: a new version, its embeddings unrelated.
    reseeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    new = train_job.run(spark, reseeded, D1, inputs, **QUIET)["model_version"]
    assert new != old

    results = run_daily(spark, cfg, D2, inputs, **QUIET)
    assert results[2]["model_version"] == new and results[3]["model_switch"] == f"{old} -> {new}"
    assert results[-1]["online"] == f"published; online serves {D2}"
    d2_keys = day.read_partition(cfg, D2, columns=["user_id"])["user_id"].to_pylist()
    versions = online_versions(cfg, sorted(set(d1_keys) | set(d2_keys)))
    assert set(versions.dropna()) == {new} and versions.notna().sum() == len(d2_keys)
    log = publish_log(cfg).iloc[-1]
    assert (log.model_version, log.switched_from, log.status) == (new, old, "published")
    assert pd.isna(log.mean_drift)  # two models' embeddings are not compared

    users = d2_keys[:20]
    with pytest.raises(ScoreError, match=f"holds embeddings of model version {new} .* artifact is model version {old}"):
        score(cfg, score_rows(cfg, old, users), model_version=old)
    assert score(cfg, score_rows(cfg, new, users)).model_version == new
    text = status_text(cfg)
    assert f"switch={old}->{new}" in text and f"served model version: {new} since {D2}" in text
    assert f"switched from {old})" in text

    # Rollback: the newest date again, the previous version pinned. Drift is compared with D1 (same version).
    results = run_daily(spark, cfg, D2, inputs, stages=("embed", "publish", "check"), model_version=old, **QUIET)
    assert results[1]["model_switch"] == f"{new} -> {old}" and results[1]["rows"] == len(d2_keys)
    assert set(online_versions(cfg, d2_keys)) == {old}
    log = publish_log(cfg).iloc[-1]
    assert (log.model_version, log.switched_from) == (old, new) and log.mean_drift >= 0
    assert score(cfg, score_rows(cfg, old, users)).model_version == old
    assert f"served model version: {old} since {D2}" in status_text(cfg)

    # An older date is still never pushed over the newest one.
    assert publish(cfg, D1).status == "skipped" and set(online_versions(cfg, d2_keys)) == {old}
