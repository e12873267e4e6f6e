"""The daily job: the same stage entry points for `metaemb run`, spark-submit and Airflow.

labeled -> samples -> embed -> publish -> check, each idempotent per run date.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Callable

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from metaemb.config import Config
from pipelines import embed, labeled, lake, samples, tables

log = logging.getLogger(__name__)
STAGES = ("labeled", "samples", "embed", "publish", "check")
TRAIN = "train"  # the retraining job: labeled + samples for the date, then Algorithm 2a


class CheckError(RuntimeError):
    """The end-of-run check found the published day inconsistent with the Delta tables."""


def load_model(cfg: Config, inputs: labeled.Inputs, version: str | None = None):
    from models import ModelSpec, load_checkpoint

    spec = ModelSpec.from_config(cfg.model, len(inputs.meta_columns), len(inputs.context_columns))
    folder = cfg.path(cfg.model.checkpoint_dir)
    ckpt = load_checkpoint(folder / f"{version}.pt" if version else folder)
    embed.check_columns(ckpt, inputs.context_columns, inputs.meta_columns)
    if ckpt.spec != spec:
        from models import CheckpointError
        raise CheckpointError(f"checkpoint {ckpt.version} has shape {ckpt.spec}, config asks for {spec}; "
                              "retrain with `metaemb train` or align [model] sizes")
    return ckpt


def check(spark: SparkSession, cfg: Config, run_date: dt.date, sample_keys: int = 20) -> dict:
    """The day is complete: one embedding per task, all finite, and the online store serves them."""
    from pipelines.feast_store import lookup

    on_day = lambda name: lake.read_table(spark, cfg, name).where(F.col("run_date") == F.lit(run_date))  # noqa: E731
    tasks = on_day(tables.TASK_SAMPLES).count()
    emb = on_day(tables.META_EMBEDDINGS)
    rows = emb.count()
    keys = list(cfg.data.task_key)
    distinct = emb.select(*keys).distinct().count()
    non_finite = emb.where(F.exists(tables.EMBEDDING, lambda x: F.isnan(x) | (F.abs(x) == float("inf")))).count()
    problems = []
    if rows != tasks:
        problems.append(f"meta_embeddings has {rows} rows for {run_date}, task_samples has {tasks} tasks")
    if distinct != rows:
        problems.append(f"meta_embeddings has {rows - distinct} duplicate task keys for {run_date}")
    if non_finite:
        problems.append(f"{non_finite} embeddings with NaN/inf for {run_date}")
    sample = emb.orderBy(*keys).limit(sample_keys).toPandas()
    if len(sample):
        online = lookup(cfg, sample[keys].to_dict("records"))
        got = np.array([np.asarray(v, dtype=np.float32) for v in online[tables.EMBEDDING]])
        want = np.array([np.asarray(v, dtype=np.float32) for v in sample[tables.EMBEDDING]])
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
            problems.append(f"online store does not serve {run_date}'s embeddings for sampled keys")
    if problems:
        raise CheckError("; ".join(problems))
    return {"stage": "check", "rows": rows, "tasks": tasks, "sampled_lookups": len(sample)}


def run_stage(spark: SparkSession, cfg: Config, stage: str, run_date: dt.date, inputs: labeled.Inputs, *,
              model_version: str | None = None, allow_empty_day: bool = False) -> dict:
    if stage == "labeled":
        return labeled.run(spark, cfg, inputs, run_date, allow_empty_day=allow_empty_day)
    if stage == "samples":
        return samples.run(spark, cfg, run_date)
    if stage == "embed":
        return embed.run(spark, cfg, run_date, load_model(cfg, inputs, model_version))
    if stage == "publish":
        from pipelines.publish import publish

        t = time.perf_counter()
        result = publish(cfg, spark, run_date)
        seconds = time.perf_counter() - t
        rows = getattr(result, "rows", 0)
        lake.log_stage(spark, cfg, "publish", {run_date: rows}, seconds, getattr(result, "method", ""))
        return {"stage": "publish", "rows": rows, "seconds": seconds, "method": getattr(result, "method", "")}
    if stage == TRAIN:
        return train_on(spark, cfg, run_date, inputs, allow_empty_day=allow_empty_day)
    if stage == "check":
        t = time.perf_counter()
        out = check(spark, cfg, run_date)
        out["seconds"] = time.perf_counter() - t
        lake.log_stage(spark, cfg, "check", {run_date: out["rows"]}, out["seconds"])
        return out
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def train_on(spark: SparkSession, cfg: Config, run_date: dt.date, inputs: labeled.Inputs, *,
             allow_empty_day: bool = False, progress: Callable[[str], None] = print) -> dict:
    """Build the window ending run_date, then train: what `metaemb train` and the retrain DAG run."""
    from pipelines import train as train_job

    for result in (labeled.run(spark, cfg, inputs, run_date, allow_empty_day=allow_empty_day),
                   samples.run(spark, cfg, run_date)):
        progress(f"[{run_date}] {result['stage']}: {describe(result)}")
    result = train_job.run(spark, cfg, run_date, inputs, progress=progress)
    result["rows"] = result["tasks"]
    return result


def run_daily(spark: SparkSession, cfg: Config, run_date: dt.date, inputs: labeled.Inputs, *,
              stages: tuple[str, ...] = STAGES, model_version: str | None = None, allow_empty_day: bool = False,
              progress: Callable[[str], None] = print) -> list[dict]:
    results = []
    for stage in stages:
        progress(f"[{run_date}] {stage} ...")
        result = run_stage(spark, cfg, stage, run_date, inputs, model_version=model_version,
                           allow_empty_day=allow_empty_day)
        progress(f"[{run_date}] {stage}: {describe(result)}")
        results.append(result)
    return results


def describe(result: dict) -> str:
    parts = [f"{result.get('rows', 0):,} rows", f"{result.get('seconds', 0):.1f}s"]
    for key in ("dates_computed", "samples", "model_version", "method", "tasks_per_s", "finetune_s"):
        if key in result:
            value = result[key]
            parts.append(f"{key}={value:,.0f}" if isinstance(value, float) else f"{key}={value}")
    if result.get("quarantined"):
        parts.append("quarantined=" + ",".join(f"{k}:{v}" for k, v in result["quarantined"].items()))
    return ", ".join(parts)
