"""Object-storage faults fail fast and say what went wrong: refused credentials, a missing
bucket, an endpoint that accepts connections and never answers. `metaemb run` exits non-zero
within 30 s with the URI and the cause, before Spark starts, having written nothing."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest

from project_helpers import PROJECT_ROOT, project_raw, write_config
from metaemb.testing import s3_server as loopback_s3

pytestmark = [pytest.mark.spark, pytest.mark.services]

DATE = "2026-10-28"


@contextlib.contextmanager
def refusing_credentials():
    with loopback_s3.serve(["lake"], authenticate=True) as endpoint:
        yield endpoint, "s3://lake/faults", "refused the credentials"


@contextlib.contextmanager
def missing_bucket(s3_endpoint):
    yield s3_endpoint, "s3://no-such-bucket/faults", "bucket 'no-such-bucket' does not exist"


@contextlib.contextmanager
def silent_endpoint():
    with loopback_s3.silent_endpoint() as endpoint:
        yield endpoint, "s3://lake/faults", "does not answer"


@pytest.mark.parametrize("fault", ["refused credentials", "missing bucket", "silent endpoint"])
def test_storage_fault_fails_fast_naming_uri_and_cause(fault, airflow_project, s3_endpoint, tmp_path):
    scenario = {"refused credentials": refusing_credentials, "missing bucket": lambda: missing_bucket(s3_endpoint),
                "silent endpoint": silent_endpoint}[fault]
    with scenario() as (endpoint, root, cause):
        online_db = tmp_path / "feast" / "online.db"
        raw = project_raw(airflow_project, pipeline={"storage_root": f"{root}/lake"},
                          model={"checkpoint_dir": f"{root}/models"},
                          feast={"sqlite_path": str(online_db), "registry_path": str(tmp_path / "registry.db")},
                          s3=loopback_s3.s3_section(endpoint))
        cfg_path = write_config(tmp_path / "metaemb.toml", raw)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "metaemb", "--config", str(cfg_path), "run", "--date", DATE],
                              capture_output=True, text=True, cwd=str(PROJECT_ROOT), timeout=120)
        seconds = time.perf_counter() - t
    assert proc.returncode != 0
    assert f"{root}/lake" in proc.stderr and cause in proc.stderr, proc.stderr[-3000:]
    assert seconds < 30, f"{fault}: took {seconds:.0f}s to fail"
    assert "starting Spark" not in proc.stderr  # failed before any job started
    assert not online_db.exists(), "the online store must not be touched"
