"""Stage 2, task_samples: one row per task with its N most recent samples of the window.

Each task's samples become flat, chronological arrays in ONE row, so the fine-tune's Arrow
batches never split a task across two batches (a task is a row), and no per-task pandas
call is needed. Samples: event_timestamp, item_hash, label, meta (len(meta)*n floats),
context (len(context)*n floats). The first n_support samples are the support set (75%
by default), the rest the query set; the daily fine-tune uses all of them.

Two ways to build a date, with the same result (tests/pipelines/test_samples_incremental.py):
- full regroup: every event of the window, ranked per task (the first day, a backfill, a changed
  window or cap, a missing or stale previous day);
- incremental (the steady daily run): the previous day's task_samples exploded back into
  samples, minus those that left the window, plus the run date's labeled events, capped again.
  A task's N newest samples of the window are among its N newest of yesterday's window plus
  today's events, since events only leave a window from its old end.
"""

from __future__ import annotations

import datetime as dt
import re

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import stages, tables
from core.config import Config
from pipelines import lake, spark_io
from pipelines.labeled import window_dates

STAGE = stages.SAMPLES
TASK_SEPARATOR = "\u001f"  # joins composite task keys before hashing


def task_hash(keys: list[str]) -> F.Column:
    return F.xxhash64(F.concat_ws(TASK_SEPARATOR, *[F.col(k) for k in keys]))


SAMPLE = ("event_timestamp", "item_hash", "label", "meta", "context")


def build(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    """Full regroup: every labeled event of the window."""
    window = window_dates(cfg, run_date)
    labeled = spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS).where(
        F.col("event_date").between(F.lit(window[0]), F.lit(window[-1])))
    return _group(cfg, labeled, run_date)


def build_incremental(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    """Yesterday's task_samples, minus samples that left the window, plus the run date's events."""
    keys = list(cfg.data.task_key)
    yesterday = spark_io.read_table(spark, cfg, tables.TASK_SAMPLES).where(
        F.col(tables.RUN_DATE) == F.lit(run_date - dt.timedelta(days=1)))
    kept = _samples_of(yesterday, keys).where(
        F.to_date("event_timestamp") >= F.lit(window_dates(cfg, run_date)[0]))
    today = spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS).where(
        F.col("event_date") == F.lit(run_date)).select(*keys, *SAMPLE)
    return _group(cfg, kept.unionByName(today), run_date)


def _samples_of(task_rows: DataFrame, keys: list[str]) -> DataFrame:
    """task_samples rows exploded back into one row per sample (meta/context unflattened)."""
    exploded = task_rows.select(*keys, "meta", "context", "n_samples", F.posexplode(
        F.arrays_zip("timestamps", "item_hashes", "labels")).alias("i", "s"))

    def row_slice(column: str) -> F.Column:
        width = (F.size(column) / F.col("n_samples")).cast("int")
        return F.slice(column, F.col("i") * width + 1, width)

    return exploded.select(*keys, F.col("s.timestamps").alias("event_timestamp"),
                           F.col("s.item_hashes").alias("item_hash"), F.col("s.labels").alias("label"),
                           row_slice("meta").alias("meta"), row_slice("context").alias("context"))


def _group(cfg: Config, samples: DataFrame, run_date: dt.date) -> DataFrame:
    """One row per task: its cap_samples newest samples, in time order, split into support/query."""
    keys = list(cfg.data.task_key)
    newest_first = Window.partitionBy(*keys).orderBy(F.col("event_timestamp").desc(), F.col("item_hash").desc())
    capped = samples.withColumn("_rank", F.row_number().over(newest_first)).where(
        F.col("_rank") <= cfg.pipeline.cap_samples)
    sample = F.struct(*SAMPLE)
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


def full_regroup_reason(cfg: Config, run_date: dt.date) -> str | None:
    """Why run_date needs the full regroup, or None when the previous day's samples can be built on."""
    log = lake.stage_log(cfg, ["stage", "run_date", "detail", "completed_at"])
    yesterday = run_date - dt.timedelta(days=1)
    built = None if log is None else log[(log["stage"] == STAGE)]
    previous = None if built is None else built[built["run_date"] == yesterday].sort_values("completed_at")
    if previous is None or previous.empty:
        return f"no task_samples for {yesterday}"
    if (built["run_date"] > run_date).any():
        return "a backfill: later dates already have samples"
    if _shape(previous["detail"].iloc[-1]) != _shape_of(cfg):
        return f"window/cap changed since {yesterday} (now {_shape_of(cfg)})"
    earlier = set(window_dates(cfg, run_date)[:-1])
    rewritten = log[(log["stage"] == stages.LABELED) & log["run_date"].isin(earlier)
                    & (log["completed_at"] > previous["completed_at"].iloc[-1])]
    if not rewritten.empty:
        return f"labeled_interactions rewritten for {sorted(set(rewritten['run_date']))[0]} after {yesterday}'s samples"
    return None


def _shape_of(cfg: Config) -> str:
    return f"window={cfg.pipeline.window_days} cap={cfg.pipeline.cap_samples}"


def _shape(detail: str) -> str | None:
    found = re.search(r"window=\d+ cap=\d+", detail or "")
    return found.group(0) if found else None


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict:
    reason = full_regroup_reason(cfg, run_date)
    mode = "full" if reason else "incremental"
    with lake.Timer() as t:
        rows = build(spark, cfg, run_date) if reason else build_incremental(spark, cfg, run_date)
        spark_io.replace_partitions(rows, cfg, tables.TASK_SAMPLES, "run_date", [run_date])
        stats = (spark_io.read_table(spark, cfg, tables.TASK_SAMPLES).where(F.col("run_date") == F.lit(run_date))
                 .agg(F.count("*").alias("tasks"), F.sum("n_samples").alias("samples")).first())
    lake.log_stage(cfg, STAGE, {run_date: stats.tasks}, t.seconds,
                   f"samples={stats.samples} {_shape_of(cfg)} build={mode}")
    return {"stage": STAGE, "rows": stats.tasks, "samples": int(stats.samples or 0), "seconds": t.seconds,
            "build": mode if reason is None else f"full: {reason}"}
