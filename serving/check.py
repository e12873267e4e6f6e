"""The end-of-day check stage: the published day is complete and the online store serves it."""

from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from pipelines import lake


class CheckError(RuntimeError):
    """The end-of-run check found the published day inconsistent with the Delta tables."""


def check(spark: SparkSession, cfg: Config, run_date: dt.date, sample_keys: int = 20) -> dict:
    """The day is complete: one embedding per task, all finite, and the online store serves them."""
    from serving.feast_store import lookup

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
