"""Shared fixtures: one real Spark session (with Delta) for the whole test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import config as config_mod

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_config(tmp_path: Path, **sections) -> config_mod.Config:
    """A config whose writable state (lake, models, feast, airflow) lives under tmp_path.

    Keyword arguments are TOML-style sections, e.g. make_config(p, pipeline={"cap_samples": 8}).
    """
    raw = {
        "pipeline": {"storage_root": str(tmp_path / "lake"), "task_buckets": 2},
        "model": {"checkpoint_dir": str(tmp_path / "models")},
        "feast": {
            "sqlite_path": str(tmp_path / "feast" / "online.db"),
            "registry_path": str(tmp_path / "feast" / "registry.db"),
        },
        "airflow": {"home": str(tmp_path / "airflow")},
        "spark": {"jars_dir": str(PROJECT_ROOT / ".jars"), "shuffle_partitions": 4},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_mod.from_dict(raw, source="<test>", base_dir=PROJECT_ROOT)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback (moto's server) with bucket "lake", for the whole run.

    Its (test) credentials go into the environment, where every client reads them."""
    from metaemb.testing import s3_server as loopback_s3

    os.environ.update(loopback_s3.TEST_CREDENTIALS)
    with loopback_s3.serve(["lake"]) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def spark(s3_endpoint):
    """The one SparkSession of the test run (starting one costs ~10 s); it reaches the loopback
    S3 endpoint too (s3a://), so lake tests on S3 share it."""
    from metaemb.testing.s3_server import s3_section
    from pipelines.spark import get_spark

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    cfg = config_mod.from_dict(
        {"spark": {"jars_dir": str(PROJECT_ROOT / ".jars"), "shuffle_partitions": 4, "master": "local[2]"},
         "s3": s3_section(s3_endpoint)},
        source="<test>", base_dir=PROJECT_ROOT,
    )
    session = get_spark(cfg, app_name="metaemb-tests", s3=True)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)
