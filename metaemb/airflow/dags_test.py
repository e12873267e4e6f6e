"""`airflow dags test DAG DATE`: the DAG's tasks in this process, no services; a copy of the
output under AIRFLOW_HOME/logs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core import config as config_mod
from metaemb.airflow.env import DAILY_DAG_ID, PROJECT_ROOT, airflow_env, home, init


def dags_test(cfg: config_mod.Config, date: str, dag_id: str = DAILY_DAG_ID) -> int:
    env = airflow_env(cfg)
    init(cfg, env)
    t = time.perf_counter()
    # `dags test` runs the tasks in this process and logs them to stdout only: keep a copy.
    log_path = home(cfg) / "logs" / f"dags-test_{dag_id}_{date}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "airflow")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([exe, "dags", "test", dag_id, date], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=str(PROJECT_ROOT))
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    print(f"[airflow] dags test {dag_id} {date}: exit {rc} in {time.perf_counter() - t:.1f}s (log {log_path})",
          flush=True)
    return rc

