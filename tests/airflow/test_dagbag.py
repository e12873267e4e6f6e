"""The DAG files import cleanly, fast, with the right tasks, order and launch settings.

DagBag runs in a subprocess with the project's Airflow environment (scripts/airflow.sh env),
so this process never imports Airflow with some other AIRFLOW_HOME.
"""

from __future__ import annotations

import pytest

import json
import subprocess
import sys

from project_helpers import PROJECT_ROOT, airflow_sh, write_config, project_raw  # noqa: F401

pytestmark = pytest.mark.unit

PROBE = r"""
import json, os, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
t, c = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
wall, cpu = time.perf_counter() - t, time.process_time() - c
out = {"errors": {str(k): v for k, v in bag.import_errors.items()}, "wall": wall, "cpu": cpu,
       "per_file": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
       "heavy_modules": [m for m in ("pyspark", "torch", "feast", "pandas", "pipelines.spark", "models")
                         if m in sys.modules],
       "dags": {}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for task in dag.tasks:
        tasks[task.task_id] = {
            "type": type(task).__name__,
            "is_spark_submit": isinstance(task, SparkSubmitOperator),
            "upstream": sorted(task.upstream_task_ids),
            "application": getattr(task, "application", None),
            "application_args": getattr(task, "application_args", None),
            "callable": getattr(getattr(task, "python_callable", None), "__qualname__", None),
            "op_kwargs": getattr(task, "op_kwargs", None),
            "conn_id": getattr(task, "_conn_id", None),
            "retries": task.retries,
            "retry_delay_s": task.retry_delay.total_seconds(),
            "pool": task.pool,
        }
    out["dags"][dag_id] = {
        "tasks": tasks, "order": [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else None,
        "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
        "timetable": type(dag.timetable).__name__,
        "schedule": str(getattr(dag.timetable, "expression", None) or getattr(dag.timetable, "_expression", "")),
    }
conn = SparkSubmitHook(conn_id=os.environ["PROBE_CONN_ID"])._connection
out["connection"] = {"master": conn["master"], "deploy_mode": conn["deploy_mode"], "binary": conn["spark_binary"]}
print("PROBE=" + json.dumps(out))
"""


def _probe(tmp_path, **sections):
    cfg = write_config(tmp_path / "metaemb.toml", project_raw(tmp_path, **sections))
    env_lines = airflow_sh(cfg, "env").stdout
    env = {}
    for line in env_lines.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True).stdout
    env["PROBE_CONN_ID"] = "metaemb_spark"
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(PROJECT_ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE=")][-1]
    return json.loads(line.removeprefix("PROBE=")), cfg


def test_dags_import_fast_with_stage_tasks_in_order(tmp_path):
    out, cfg = _probe(tmp_path)
    assert out["errors"] == {}, out["errors"]
    assert set(out["dags"]) == {"metaemb_daily", "metaemb_retrain"}
    # Thin wiring: nothing heavy imported while parsing, and it is quick.
    assert out["heavy_modules"] == [], f"DAG parsing imported {out['heavy_modules']}"
    print(f"DagBag parse: wall {out['wall']:.2f}s, cpu {out['cpu']:.2f}s, per file {out['per_file']}")
    assert out["cpu"] < 2.0, f"parsing the DAG files took {out['cpu']:.2f}s of CPU"
    assert out["wall"] < 10.0, f"parsing the DAG files took {out['wall']:.2f}s"  # generous: shared CI box

    daily = out["dags"]["metaemb_daily"]
    stages = ["labeled", "samples", "embed", "publish", "check"]
    assert list(daily["tasks"]) == stages
    for prev, stage in zip([None] + stages, stages):
        t = daily["tasks"][stage]
        assert t["upstream"] == ([prev] if prev else []), (stage, t["upstream"])
        assert t["pool"] == "metaemb_lake"
        if stage in ("publish", "check"):  # no JVM: a Python task
            assert t["type"] == "PythonOperator" and t["callable"] == "run_serving_stage", t
            assert t["op_kwargs"] == {"stage": stage, "run_date": "{{ ds }}", "config": str(cfg)}
            continue
        assert t["is_spark_submit"], t["type"]
        assert t["application"] == str(PROJECT_ROOT / "metaemb" / "jobs.py")
        assert t["application_args"][:4] == ["--stage", stage, "--date", "{{ ds }}"]
        assert t["application_args"][4:] == ["--config", str(cfg)]
        assert t["conn_id"] == "metaemb_spark"
    assert daily["max_active_runs"] == 1
    assert daily["catchup"] is False
    assert daily["timetable"] == "CronTriggerTimetable" and daily["schedule"] == "0 0 * * *"

    retrain = out["dags"]["metaemb_retrain"]
    assert list(retrain["tasks"]) == ["train"]
    assert retrain["tasks"]["train"]["application_args"][:4] == ["--stage", "train", "--date", "{{ ds }}"]
    assert retrain["tasks"]["train"]["pool"] == "metaemb_lake"
    assert retrain["max_active_runs"] == 1

    # The Spark connection the helper defines from [spark] master, as the provider reads it.
    assert out["connection"] == {"master": "local[2]", "deploy_mode": "client", "binary": "spark-submit"}


def test_config_drives_master_retries_and_schedule(tmp_path):
    out, _ = _probe(tmp_path, spark={"master": "spark://10.1.2.3:7077"},
                    airflow={"retries": 3, "retry_delay_minutes": 2.0, "daily_schedule": "30 2 * * *",
                             "retrain_schedule": "", "pool": ""})
    assert out["connection"]["master"] == "spark://10.1.2.3:7077"
    daily = out["dags"]["metaemb_daily"]
    assert daily["schedule"] == "30 2 * * *"
    assert all(t["retries"] == 3 and t["retry_delay_s"] == 120 for t in daily["tasks"].values())
    assert all(t["pool"] == "default_pool" for t in daily["tasks"].values())
    assert out["dags"]["metaemb_retrain"]["timetable"] == "NullTimetable"


def test_executor_writes_make_publish_a_spark_submit(tmp_path):
    """[feast] write_from = "spark": the publish task submits metaemb/jobs.py (its executors write
    the day); check stays a plain Python task."""
    out, cfg = _probe(tmp_path, feast={"online_store": "redis", "write_from": "spark"})
    assert out["errors"] == {}, out["errors"]
    tasks = out["dags"]["metaemb_daily"]["tasks"]
    assert tasks["publish"]["is_spark_submit"] and tasks["publish"]["application_args"][:2] == ["--stage", "publish"]
    assert tasks["publish"]["upstream"] == ["embed"] and tasks["check"]["upstream"] == ["publish"]
    assert tasks["check"]["type"] == "PythonOperator"
