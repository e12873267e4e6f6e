"""The daily job's serving stages, publish and check: plain Python, no Spark, no JVM.

Both read the Delta tables through delta-rs, talk to Feast, and append their completion
to stage_log. `metaemb run`, metaemb/jobs.py and the DAG's Python tasks call `run`.
"""

from __future__ import annotations

import datetime as dt
import time

from core import stages
from core.config import Config
from pipelines import lake
from serving.check import check
from serving.publish import publish


def run(cfg: Config, stage: str, run_date: dt.date, writer=None) -> dict:
    """Run publish or check for run_date; returns the stage's figures (rows, seconds, ...).
    writer: publish's bulk write from elsewhere (serving.publish.Writer; None: this process)."""
    t = time.perf_counter()
    lake.check_storage(cfg)  # an unreachable lake fails here in seconds, naming the URI
    if stage == stages.PUBLISH:
        result = publish(cfg, run_date, writer=writer)
        out = {"stage": stage, "rows": result.rows, "method": result.method, "read_s": result.read_s}
        if result.view:
            out["online"] = f"serves {result.view}"
        if result.switched_from:
            out["model_switch"] = f"{result.switched_from} -> {result.model_version}"
        detail = result.method
    elif stage == stages.CHECK:
        out = check(cfg, run_date)
        detail = out["online"]
    else:
        raise ValueError(f"{stage!r} is not a serving stage ({', '.join(stages.SERVING_STAGES)})")
    out["seconds"] = time.perf_counter() - t
    lake.log_stage(cfg, stage, {run_date: out["rows"]}, out["seconds"], detail)
    return out
