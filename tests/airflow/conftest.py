"""Fixtures for the Airflow tests: one small real project (synthetic data, a trained model,
Feast applied) shared by every test here; helpers live in af_helpers.py."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from af_helpers import DAYS, END_DATE, TRAIN_DATE, project_raw, write_config


@pytest.fixture(scope="session")
def airflow_project(tmp_path_factory, spark):
    """Synthetic data (200 users, 10 days), a trained model and `feast apply`, under one root.

    Training uses the test run's one Spark session (metaemb train, in-process).
    """
    from metaemb import cli
    from metaemb.datasets.synthetic import SyntheticSpec, generate

    # Not under pytest's basetemp: pytest keeps only its 3 latest basetemps, so on a box where
    # other pytest runs start meanwhile, a long Airflow test's files could vanish mid-run.
    root = Path(tempfile.mkdtemp(prefix="metaemb-airflow-"))
    generate(root / "data", SyntheticSpec(users=200, days=DAYS, end_date=END_DATE, seed=0), progress=lambda _: None)
    cfg_path = write_config(root / "metaemb.toml", project_raw(root))
    t = time.perf_counter()
    rc = cli.main(["--config", str(cfg_path), "train", "--date", TRAIN_DATE.isoformat()])
    assert rc == 0, "metaemb train failed (see the captured output)"
    rc = cli.main(["--config", str(cfg_path), "apply"])
    assert rc == 0, "metaemb apply (feast apply) failed (see the captured output)"
    print(f"airflow_project: data + train + apply in {time.perf_counter() - t:.1f}s")
    yield root
    shutil.rmtree(root, ignore_errors=True)


