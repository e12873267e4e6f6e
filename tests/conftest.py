"""Shared fixtures (one real Spark session with Delta, a loopback S3 endpoint and Redis, a small
trained project) and the marks every test carries.

Marks (pyproject.toml): `unit` needs no JVM and no server (`make test-fast` runs these); `spark`
starts a JVM (the session, spark-submit); `services` starts real servers (Redis, Postgres, the
S3 endpoint, Airflow, a Spark standalone cluster); `slow` is a heavy end-to-end test. Collection
fails on a test with none of unit/spark/services, or a `unit` test that asks for a fixture that
starts a JVM or a server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from core import config as config_mod
from project_helpers import PROJECT_ROOT, make_config
KINDS = {"unit", "spark", "services"}
# What each fixture starts, so its users must carry the mark. The Spark session's own S3
# endpoint comes with `spark`.
NEEDS = {"spark": "spark", "airflow_project": "spark", "s3_endpoint": "services", "redis_server": "services",
         "redis_cluster": "services"}


def pytest_collection_modifyitems(config, items):
    problems = []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        if not marks & KINDS:
            problems.append(f"{item.nodeid}: no mark of {sorted(KINDS)}")
        if "unit" in marks and marks & (KINDS - {"unit"}):
            problems.append(f"{item.nodeid}: marked 'unit' and {sorted(marks & (KINDS - {'unit'}))}")
        used = set(item.fixturenames) & set(NEEDS)
        if "spark" in used:
            used.discard("s3_endpoint")
        for fixture in used:
            if NEEDS[fixture] not in marks or "unit" in marks:
                problems.append(f"{item.nodeid}: uses fixture {fixture!r}, so it must be marked "
                                f"{NEEDS[fixture]!r} (and not 'unit')")
    if problems:
        raise pytest.UsageError("tests marked wrong:\n  " + "\n  ".join(problems))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback (moto's server) with bucket "lake", for the whole run.

    Its (test) credentials go into the environment, where every client reads them."""
    from metaemb.testing import s3_server

    os.environ.update(s3_server.TEST_CREDENTIALS)
    with s3_server.serve(["lake"]) as endpoint:
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


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server (Debian's package) on 127.0.0.1:<free port>; stopped after."""
    from metaemb.testing import redis_server as server

    try:
        with server.serve() as connection:
            yield connection
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def redis_cluster():
    """A real 3-master Redis Cluster on loopback ports; its connection string."""
    from metaemb.testing import redis_server as server

    try:
        with server.serve_cluster(3) as connection:
            yield connection
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def airflow_project(tmp_path_factory, spark):
    """Synthetic data (200 users, 10 days), a trained model and `feast apply`, under one root,
    shared by the Airflow, end-to-end and check tests (helpers: project_helpers.py).

    Training uses the test run's one Spark session (metaemb train, in-process).
    """
    from metaemb import cli
    from metaemb.datasets.synthetic import SyntheticSpec, generate
    from project_helpers import DAYS, END_DATE, TRAIN_DATE, project_raw, write_config

    # Not under pytest's basetemp: pytest keeps only its 3 latest basetemps, so on a box where
    # other pytest runs start meanwhile, a long test's files could vanish mid-run.
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


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)
