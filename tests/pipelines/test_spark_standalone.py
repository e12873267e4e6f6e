"""The daily job on a real Spark standalone cluster (master + worker from the pyspark
distribution, on loopback), with its lakehouse on the loopback S3 endpoint, gives the same
embeddings as local[*] on local disk."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest

from core import config as config_mod
from metaemb.testing.s3_server import s3_section
from metaemb.jobs import submit_command
from metaemb.testing.loopback import free_port
from metaemb.datasets.synthetic import SyntheticSpec, generate
from core import tables
from pipelines import labeled, lake
from pipelines import train as train_job
from metaemb.daily import run_daily
from project_helpers import PROJECT_ROOT, make_config

pytestmark = [pytest.mark.spark, pytest.mark.services]

SPARK_HOME = Path(pyspark.__file__).parent
RUN_DATE = dt.date(2026, 10, 30)


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[1]} exited {proc.returncode}: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"'{text}' not seen in {path} after {timeout}s")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A Spark master and one worker (1 core, 2 GiB) on free loopback ports; stopped after."""
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(logs / "work")}
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    procs = []
    try:
        master_log = logs / "master.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())], stdout=master_log.open("w"), stderr=subprocess.STDOUT, env=env))
        wait_for(master_log, "I have been elected leader", procs[0])
        worker_log = logs / "worker.log"
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
             "--memory", "2g", "--webui-port", str(free_port())],
            stdout=worker_log.open("w"), stderr=subprocess.STDOUT, env=env))
        wait_for(worker_log, "Successfully registered with master", procs[1])
        yield url
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def write_toml(path: Path, sections: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(sections))
    return path


def test_cluster_embeddings_equal_local(spark, s3_endpoint, tmp_path, standalone_cluster):
    generate(tmp_path / "data", SyntheticSpec(users=150, days=7, end_date=RUN_DATE))
    data = {"interactions": str(tmp_path / "data" / "interactions.parquet"),
            "entity_features": str(tmp_path / "data" / "entity_features.parquet")}
    common = {"data": data, "pipeline": {"window_days": 7, "task_buckets": 2},
              "train": {"epochs": 1}, "model": {"checkpoint_dir": str(tmp_path / "models")}}
    local = make_config(tmp_path / "local", **common)
    inputs = labeled.resolve_inputs(local)
    stages = ("labeled", "samples")
    run_daily(spark, local, RUN_DATE, inputs, stages=stages, progress=lambda _: None)
    train_job.run(spark, local, RUN_DATE, inputs, progress=lambda _: None)
    run_daily(spark, local, RUN_DATE, inputs, stages=("embed",), progress=lambda _: None)

    cluster_toml = write_toml(tmp_path / "cluster.toml", {
        "data": data,
        "pipeline": {"storage_root": "s3://lake/standalone/lake", "window_days": 7, "task_buckets": 2},
        "s3": s3_section(s3_endpoint),
        "model": {"checkpoint_dir": str(tmp_path / "models")},
        "spark": {"master": standalone_cluster, "jars_dir": str(PROJECT_ROOT / ".jars"), "shuffle_partitions": 4,
                  "driver_memory": "1g"},
    })
    proc = subprocess.run([sys.executable, "-m", "metaemb.cli", "--config", str(cluster_toml), "run",
                           "--date", RUN_DATE.isoformat(), "--stages", "labeled,samples,embed"],
                          capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_stdout = proc.stdout

    cluster = config_mod.load(cluster_toml)
    read = lambda cfg: {r["user_id"]: np.asarray(r[tables.EMBEDDING]) for r in  # noqa: E731
                        lake.read_day(cfg, tables.META_EMBEDDINGS, RUN_DATE, ["user_id", tables.EMBEDDING]).to_pylist()}
    want = read(local)
    assert len(want) > 100 and f"embed: {len(want)} rows" in run_stdout, run_stdout[-2000:]

    def assert_same(what: str) -> None:
        got = read(cluster)
        assert set(got) == set(want), what
        diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
        assert diff < 1e-4, f"{what}: cluster and local embeddings differ by up to {diff}"

    assert_same("metaemb run on the cluster")
    # The Airflow task path: the very spark-submit command line a stage task runs, to the cluster.
    argv = submit_command(config_mod.load(cluster_toml), "embed", RUN_DATE,
                                str(SPARK_HOME / "bin" / "spark-submit"))
    assert argv[argv.index("--master") + 1] == standalone_cluster
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"[{RUN_DATE}] embed: {len(want)} rows" in proc.stdout, proc.stdout[-2000:]
    assert_same("spark-submit pipelines/jobs.py --stage embed on the cluster")
