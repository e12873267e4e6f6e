"""The lakehouse on object storage: every Delta table, the checkpoint, the inputs and Feast's
registry under s3://lake/… on a real S3 endpoint (moto's server on loopback), read without
Spark by delta-rs. The same data and model on local disk give the same embeddings."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from project_helpers import PROJECT_ROOT, own_lake_config, project_raw, write_config
from core import config as config_mod
from core import tables
from metaemb import cli
from metaemb.testing.s3_server import s3_section
from metaemb.daily import run_daily
from models.checkpoint import load_checkpoint, save_checkpoint
from pipelines import delta_tables, labeled, lake
from pipelines.faults import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from serving import feast_repo

pytestmark = [pytest.mark.spark, pytest.mark.services]

D1, D2 = dt.date(2026, 10, 28), dt.date(2026, 10, 29)
QUIET = dict(progress=lambda _: None)


@pytest.fixture(scope="module")
def s3_project(airflow_project, s3_endpoint, tmp_path_factory):
    """The shared project's inputs and model copied to s3://lake/flow/, and a config that keeps
    everything there except the SQLite online store."""
    root, tmp = airflow_project, tmp_path_factory.mktemp("s3lake")
    prefix = "s3://lake/flow"
    raw = project_raw(root, data={"interactions": f"{prefix}/data/interactions.parquet",
                                  "entity_features": f"{prefix}/data/entity_features.parquet"},
                      pipeline={"storage_root": f"{prefix}/lake"}, model={"checkpoint_dir": f"{prefix}/models"},
                      feast={"project": "s3lake", "sqlite_path": str(tmp / "feast" / "online.db"),
                             "registry_path": f"{prefix}/feast/registry.db"},
                      s3=s3_section(s3_endpoint))
    cfg_path = write_config(tmp / "metaemb-s3.toml", raw)
    cfg = config_mod.load(cfg_path)
    for name in ("interactions.parquet", "entity_features.parquet"):
        cfg.location(f"{prefix}/data/{name}").write_bytes_atomic((root / "data" / name).read_bytes())
    save_checkpoint(load_checkpoint(root / "models"), cfg.location(cfg.model.checkpoint_dir))
    assert cli.main(["--config", str(cfg_path), "apply"]) == 0
    return cfg, str(cfg_path)


def embeddings(cfg, day: dt.date) -> dict[str, np.ndarray]:
    rows = lake.read_day(cfg, tables.META_EMBEDDINGS, day, ["user_id", tables.EMBEDDING]).to_pylist()
    return {r["user_id"]: np.asarray(r[tables.EMBEDDING], dtype=np.float32) for r in rows}


def day_counts(cfg, day: dt.date) -> dict[str, tuple[int, int]]:
    """(rows, distinct task keys) of the date's partition in each stage table."""
    out = {}
    for name, column in ((tables.LABELED_INTERACTIONS, "event_date"), (tables.TASK_SAMPLES, tables.RUN_DATE),
                         (tables.META_EMBEDDINGS, tables.RUN_DATE)):
        t = lake.read_day(cfg, name, day, ["user_id"], date_column=column)
        out[name] = (t.num_rows, len(set(t["user_id"].to_pylist())))
    return out


def test_daily_flow_on_s3_equals_local_disk_and_reruns_replace_the_partition(
        s3_project, airflow_project, spark, tmp_path, capsys):
    cfg, cfg_path = s3_project
    local = own_lake_config(airflow_project, tmp_path, "s3local")
    run_daily(spark, local, D1, labeled.resolve_inputs(local), stages=("labeled", "samples", "embed"), **QUIET)

    assert cli.main(["--config", cfg_path, "run", "--date", D1.isoformat()]) == 0
    on_disk, on_s3 = embeddings(local, D1), embeddings(cfg, D1)
    assert len(on_s3) > 100 and sorted(on_s3) == sorted(on_disk)
    diff = max(float(np.abs(on_s3[k] - on_disk[k]).max()) for k in on_s3)
    assert diff <= 1e-5, f"S3 and local-disk embeddings differ by {diff}"

    keys = sorted(on_s3)[:25]
    online = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])
    for key, vector in zip(online["user_id"], online[tables.EMBEDDING]):
        np.testing.assert_allclose(np.asarray(vector, dtype=np.float32), on_s3[key], atol=1e-6)

    before = day_counts(cfg, D1)
    assert before[tables.META_EMBEDDINGS][0] == before[tables.META_EMBEDDINGS][1] == len(on_s3)
    version = delta_tables.version(cfg.table_location(tables.META_EMBEDDINGS))
    assert cli.main(["--config", cfg_path, "run", "--date", D1.isoformat()]) == 0
    assert day_counts(cfg, D1) == before, "a rerun must replace exactly its partition"
    assert delta_tables.version(cfg.table_location(tables.META_EMBEDDINGS)) > version

    capsys.readouterr()
    assert cli.main(["--config", cfg_path, "status"]) in (0, 1)  # 1 = stale: the data ends in October
    status = capsys.readouterr().out
    assert D1.isoformat() in status
    assert cli.main(["--config", cfg_path, "validate", "--date", D1.isoformat()]) == 0
    assert "interactions.parquet" in capsys.readouterr().out

    # score reads its input from S3 too, and scores it as it scores the same rows in memory
    import io

    import pandas as pd

    from serving.score import score

    events = pd.read_parquet(airflow_project / "data" / "interactions.parquet")
    rows = events[events["user_id"].astype(str).isin(keys[:5])].groupby("user_id").tail(1).reset_index(drop=True)
    buffer = io.BytesIO()
    rows.to_parquet(buffer)
    cfg.location("s3://lake/flow/score.parquet").write_bytes_atomic(buffer.getvalue())
    out = tmp_path / "scores.csv"
    assert cli.main(["--config", cfg_path, "export"]) == 0  # the fixture copied the checkpoint, not its artifact
    assert cli.main(["--config", cfg_path, "score", "--input", "s3://lake/flow/score.parquet", "--out", str(out)]) == 0
    from_s3 = pd.read_csv(out)["probability"].to_numpy()
    np.testing.assert_allclose(from_s3, score(cfg, rows).frame["probability"].to_numpy(), rtol=0, atol=1e-6)
    assert len(from_s3) == len(rows) > 0


def test_kill9_in_embed_on_s3_keeps_the_previous_table_version(s3_project, spark, tmp_path):
    cfg, cfg_path = s3_project
    inputs = labeled.resolve_inputs(cfg)
    if not lake.table_exists(cfg, tables.META_EMBEDDINGS) or not embeddings(cfg, D1):
        run_daily(spark, cfg, D1, inputs, **QUIET)
    run_daily(spark, cfg, D2, inputs, stages=("labeled", "samples"), **QUIET)
    table = cfg.table_location(tables.META_EMBEDDINGS)
    version = delta_tables.version(table)
    keys = sorted(embeddings(cfg, D1))[:25]
    online_before = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])

    marker = tmp_path / "paused"
    env = {**os.environ, PAUSE_AT_ENV: "embed:after-first-batch", PAUSE_MARKER_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "metaemb", "--config", cfg_path, "run", "--date", D2.isoformat(),
                             "--stages", "embed"], env=env, cwd=str(PROJECT_ROOT), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if not marker.exists():
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the embed stage never reached its kill point:\n{proc.communicate()[0][-4000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert delta_tables.version(table) == version, "the killed stage must not commit"
    assert embeddings(cfg, D2) == {} and len(embeddings(cfg, D1)) > 100
    online_after = feast_repo.lookup(cfg, [{"user_id": k} for k in keys])
    assert online_after["user_id"].tolist() == online_before["user_id"].tolist()
    for a, b in zip(online_after[tables.EMBEDDING], online_before[tables.EMBEDDING]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    run_daily(spark, cfg, D2, inputs, stages=("embed",), **QUIET)
    assert len(embeddings(cfg, D2)) > 100
