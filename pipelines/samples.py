"""Stage 2, task_samples: one row per task with its N most recent samples of the window.

Each task's samples become flat, chronological arrays in ONE row, so the fine-tune's Arrow
batches never split a task across two batches (a task is a row), and no per-task pandas
call is needed. Samples: event_timestamp, item_hash, label, meta (len(meta)*n floats),
context (len(context)*n floats). The first n_support samples are the support set (75%
by default), the rest the query set; the daily fine-tune uses all of them.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import tables
from core.config import Config
from pipelines import lake
from pipelines.labeled import window_dates

STAGE = "samples"
TASK_SEPARATOR = "\u001f"  # joins composite task keys before hashing


def task_hash(keys: list[str]) -> F.Column:
    return F.xxhash64(F.concat_ws(TASK_SEPARATOR, *[F.col(k) for k in keys]))


def build(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    keys = list(cfg.data.task_key)
    window = window_dates(cfg, run_date)
    labeled = lake.read_table(spark, cfg, tables.LABELED_INTERACTIONS).where(
        F.col("event_date").between(F.lit(window[0]), F.lit(window[-1])))
    newest_first = Window.partitionBy(*keys).orderBy(F.col("event_timestamp").desc(), F.col("item_hash").desc())
    capped = labeled.withColumn("_rank", F.row_number().over(newest_first)).where(
        F.col("_rank") <= cfg.pipeline.cap_samples)
    sample = F.struct("event_timestamp", "item_hash", "label", "meta", "context")
    grouped = capped.groupBy(*keys).agg(F.sort_array(F.collect_list(sample)).alias("s"))
    n = F.size("s")
    split = F.round(n * F.lit(cfg.pipeline.support_fraction)).cast("int")
    n_support = F.when(n == 1, 1).otherwise(F.least(n - 1, F.greatest(F.lit(1), split)))
    return grouped.select(
        *keys,
        task_hash(keys).alias("task_hash"),
        n.alias("n_samples"),
        n_support.alias("n_support"),
        F.col("s.event_timestamp").alias("timestamps"),
        F.col("s.item_hash").alias("item_hashes"),
        F.col("s.label").alias("labels"),
        F.flatten("s.meta").alias("meta"),
        F.flatten("s.context").alias("context"),
        F.lit(run_date).alias("run_date"),
    )


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict:
    with lake.Timer() as t:
        lake.replace_partitions(build(spark, cfg, run_date), cfg, tables.TASK_SAMPLES, "run_date", [run_date])
        stats = (lake.read_table(spark, cfg, tables.TASK_SAMPLES).where(F.col("run_date") == F.lit(run_date))
                 .agg(F.count("*").alias("tasks"), F.sum("n_samples").alias("samples")).first())
    lake.log_stage(cfg, STAGE, {run_date: stats.tasks}, t.seconds, f"samples={stats.samples}")
    return {"stage": STAGE, "rows": stats.tasks, "samples": int(stats.samples or 0), "seconds": t.seconds}
