"""The end-of-day check stage: the day is complete in Delta, and the online store holds what
publish left there (the day itself, or a newer day when publish skipped an older date)."""

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
    """The day's Delta partition is complete, and the online store holds what publish left there.

    Complete: one embedding per task of task_samples, no duplicate keys, all finite, one model
    version, the one the embed stage logged. Online: when publish pushed the day, sampled keys
    serve this day's embeddings; when publish skipped it because a newer day is online (a
    backfill of an older date), the same keys still serve that newer day's embeddings unchanged.
    """
    from serving import feast_store
    from serving import publish as publish_stage

    on_day = lambda name, day=run_date: lake.read_table(spark, cfg, name).where(F.col(tables.RUN_DATE) == F.lit(day))  # noqa: E731
    keys = list(cfg.data.task_key)
    emb = on_day(tables.META_EMBEDDINGS)
    problems = partition_problems(spark, cfg, run_date, emb, on_day(tables.TASK_SAMPLES).count())
    store = feast_store.feature_store(cfg)
    try:
        outcome = publish_stage.latest_outcome(cfg, spark, run_date, store)
    except feast_store.PublishError as e:
        raise CheckError("; ".join([*problems, str(e)])) from e
    if outcome is None:
        problems.append(f"publish_log has no row for {run_date}: run the publish stage first")
        raise CheckError("; ".join(problems))
    served = outcome.served_date
    sample = emb.select(*keys).orderBy(*keys).limit(sample_keys)
    if served != run_date:
        sample = sample.join(on_day(tables.META_EMBEDDINGS, served).select(*keys), on=keys, how="inner")
    want = (on_day(tables.META_EMBEDDINGS, served).join(sample, on=keys, how="inner")
            .orderBy(*keys).select(*keys, tables.EMBEDDING).toPandas())
    if len(want):
        problems += online_mismatch(cfg, store, want, keys, served)
    if problems:
        raise CheckError("; ".join(problems))
    return {"stage": "check", "rows": int(emb.count()), "sampled_lookups": len(want),
            "online": outcome.describe()}


def partition_problems(spark: SparkSession, cfg: Config, run_date: dt.date, emb, tasks: int) -> list[str]:
    """What is wrong with the run_date partition of meta_embeddings ([] when it is complete)."""
    keys = list(cfg.data.task_key)
    stats = emb.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(F.concat_ws("\x1f", *[F.col(k).cast("string") for k in keys])).alias("distinct"),
        F.sum(F.when(F.exists(tables.EMBEDDING, lambda x: F.isnan(x) | (F.abs(x) == float("inf"))), 1)
              .otherwise(0)).alias("non_finite"),
        F.collect_set(tables.MODEL_VERSION).alias("versions"),
    ).collect()[0]
    rows, versions = int(stats["rows"]), sorted(stats["versions"] or [])
    problems = []
    if rows != tasks:
        problems.append(f"meta_embeddings has {rows} rows for {run_date}, task_samples has {tasks} tasks")
    if int(stats["distinct"]) != rows:
        problems.append(f"meta_embeddings has {rows - int(stats['distinct'])} duplicate task keys for {run_date}")
    if stats["non_finite"]:
        problems.append(f"{stats['non_finite']} embeddings with NaN/inf for {run_date}")
    embedded_with = lake.stage_detail(cfg, "embed", run_date).removeprefix("model=")
    if rows and versions != [embedded_with]:
        problems.append(f"meta_embeddings for {run_date} holds model version(s) {versions}, "
                        f"the embed stage logged {embedded_with or 'none'}")
    return problems


def online_mismatch(cfg: Config, store, want, keys: list[str], served: dt.date) -> list[str]:
    """[] when the online store returns `want`'s embeddings for its keys, else the problem."""
    from serving.feast_store import lookup

    online = lookup(cfg, want[keys].to_dict("records"), store=store)
    got = [None if v is None else np.asarray(v, dtype=np.float32) for v in online[tables.EMBEDDING]]
    bad = [dict(zip(keys, k)) for k, g, w in zip(want[keys].itertuples(index=False), got, want[tables.EMBEDDING])
           if g is None or g.shape != np.shape(w) or not np.allclose(g, np.asarray(w, dtype=np.float32), atol=1e-6)]
    if not bad:
        return []
    return [f"online store does not serve {served}'s embeddings for {len(bad)} of {len(want)} sampled keys "
            f"(first: {bad[0]})"]
