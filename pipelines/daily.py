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
    """The day's Delta partition is complete, and the online store holds what publish left there.

    Complete: one embedding per task of task_samples, no duplicate keys, all finite, one model
    version, the one the embed stage logged. Online: when publish pushed the day, sampled keys
    serve this day's embeddings; when publish skipped it because a newer day is online (a
    backfill of an older date), the same keys still serve that newer day's embeddings unchanged.
    """
    from pipelines import feast_store
    from pipelines import publish as publish_stage

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
    from pipelines.feast_store import lookup

    online = lookup(cfg, want[keys].to_dict("records"), store=store)
    got = [None if v is None else np.asarray(v, dtype=np.float32) for v in online[tables.EMBEDDING]]
    bad = [dict(zip(keys, k)) for k, g, w in zip(want[keys].itertuples(index=False), got, want[tables.EMBEDDING])
           if g is None or g.shape != np.shape(w) or not np.allclose(g, np.asarray(w, dtype=np.float32), atol=1e-6)]
    if not bad:
        return []
    return [f"online store does not serve {served}'s embeddings for {len(bad)} of {len(want)} sampled keys "
            f"(first: {bad[0]})"]


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
        lake.log_stage(spark, cfg, "check", {run_date: out["rows"]}, out["seconds"], out["online"])
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
    for key in ("dates_computed", "samples", "model_version", "method", "tasks_per_s", "finetune_s", "online"):
        if key in result:
            value = result[key]
            parts.append(f"{key}={value:,.0f}" if isinstance(value, float) else f"{key}={value}")
    if result.get("quarantined"):
        parts.append("quarantined=" + ",".join(f"{k}:{v}" for k, v in result["quarantined"].items()))
    return ", ".join(parts)
