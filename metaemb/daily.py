"""The daily job: the same stage entry points for `metaemb run`, spark-submit and Airflow.

labeled -> samples -> embed -> publish -> check (core.stages), each idempotent per run date.
The stages come from two layers (pipelines: Spark jobs; serving: publish and check), so their
dispatch lives here, in the entry-point layer that may import both.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Callable

from core.stages import DAILY, EMBED, LABELED, PUBLISH, SAMPLES, SERVING_STAGES, TRAIN
from core.config import Config
from models.checkpoint import CheckpointError
from pipelines import embed, labeled, samples
from pipelines.contract import InputError
from serving import stages as serving_stages
from serving.check import CheckError
from serving.gate import GateError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
# Failures a retry cannot mend: the same input, checkpoint and Delta rows fail the same way. A
# stage job exits with core.stages.EXIT_FAILED_ON_DATA on them; Airflow then fails the task
# without retries (and a backfill goes on with the next date).
DATA_ERRORS = (InputError, labeled.EmptyDayError, CheckpointError, embed.ModelMismatchError, GateError, CheckError)


def load_model(cfg: Config, inputs: labeled.Inputs, version: str | None = None):
    from models.blocks import ModelSpec
    from models.checkpoint import load_checkpoint

    spec = ModelSpec.from_config(cfg.model, len(inputs.meta_columns), len(inputs.context_columns))
    folder = cfg.location(cfg.model.checkpoint_dir)
    ckpt = load_checkpoint(folder / f"{version}.pt" if version else folder)
    embed.check_columns(ckpt, inputs.context_columns, inputs.meta_columns)
    if ckpt.spec != spec:
        raise CheckpointError(f"checkpoint {ckpt.version} has shape {ckpt.spec}, config asks for {spec}; "
                              "retrain with `metaemb train` or align [model] sizes")
    return ckpt


def run_stage(spark: "SparkSession | None", cfg: Config, stage: str, run_date: dt.date,
              inputs: labeled.Inputs | None, *, model_version: str | None = None,
              allow_empty_day: bool = False) -> dict:
    """One stage for one date. publish and check need no Spark (spark and inputs may be None)."""
    if stage in SERVING_STAGES:
        writer = spark_writer(spark) if stage == PUBLISH and cfg.feast.write_from == "spark" else None
        return serving_stages.run(cfg, stage, run_date, writer=writer)
    if stage == LABELED:
        return labeled.run(spark, cfg, inputs, run_date, allow_empty_day=allow_empty_day)
    if stage == SAMPLES:
        return samples.run(spark, cfg, run_date)
    if stage == EMBED:
        return embed.run(spark, cfg, run_date, load_model(cfg, inputs, model_version))
    if stage == TRAIN:
        return train_on(spark, cfg, run_date, inputs, allow_empty_day=allow_empty_day)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join((*DAILY, TRAIN))}")


def needs_spark(cfg: Config, stage: str) -> bool:
    """Does the stage run on Spark? The serving stages do not, but for publish's executor writes."""
    return stage not in SERVING_STAGES or (stage == PUBLISH and cfg.feast.write_from == "spark")


def spark_writer(spark: "SparkSession", partitions: int | None = None):
    """publish's bulk write on the Spark executors ([feast] write_from = "spark"): each task
    writes its part of the day's meta_embeddings partition into the namespace, on a connection
    of its own, in batches of [feast] write_batch_rows. The tasks get the day's data files and
    read them with delta-rs (serving.online.redis.write_files), not through Spark's read, whose
    JVM-to-Arrow hand-over of the rows to Python cost more than encoding and writing them
    (`metaemb bench publish` runs both; docs/benchmarks.md). A table delta-rs refuses (deletion
    vectors) goes through spark_read_writer.
    partitions: tasks to split the day into (default: the task slots of the session; at most
    one task per file)."""
    _require_session(spark)

    def write(cfg: Config, run_date: dt.date, namespace) -> int:
        import functools

        from core import tables
        from pipelines import delta_tables, lake
        from serving.day import partition_columns
        from serving.online import redis as redis_store
        from serving.online.encode import encoding

        try:
            day = lake.day_files(cfg, tables.META_EMBEDDINGS, run_date, partition_columns(cfg))
        except delta_tables.DeltaReadError as e:
            log.info("the executors get the day through Spark's read (%s)", e)
            return spark_read_writer(spark, partitions)(cfg, run_date, namespace)
        write_files = functools.partial(redis_store.write_files, redis_store.target(cfg), encoding(cfg), namespace,
                                        cfg.feast.write_batch_rows, day)
        tasks = max(1, min(partitions or spark.sparkContext.defaultParallelism, len(day.paths)))
        return int(spark.sparkContext.parallelize(day.paths, tasks).mapPartitions(write_files).sum())

    return write


def spark_read_writer(spark: "SparkSession", partitions: int | None = None):
    """spark_writer's bulk write with the day read by Spark and handed to the tasks by
    mapInArrow: for tables that only Spark reads (deletion vectors, column mapping)."""
    _require_session(spark)

    def write(cfg: Config, run_date: dt.date, namespace) -> int:
        import functools

        from pyspark.sql import functions as F

        from core import tables
        from pipelines import spark_io
        from serving.day import partition_columns
        from serving.online import redis as redis_store
        from serving.online.encode import encoding

        day = (spark_io.read_table(spark, cfg, tables.META_EMBEDDINGS).where(F.col(tables.RUN_DATE) == F.lit(run_date))
               .select(*partition_columns(cfg)))
        have, tasks = day.rdd.getNumPartitions(), partitions or spark.sparkContext.defaultParallelism
        if partitions and have > partitions:
            day = day.coalesce(partitions)  # no shuffle
        elif have < tasks:
            day = day.repartition(tasks)
        part = functools.partial(redis_store.write_arrow_batches, redis_store.target(cfg), encoding(cfg), namespace,
                                 cfg.feast.write_batch_rows)
        counts = day.mapInArrow(part, "rows long")
        return int(counts.agg(F.sum("rows")).first()[0] or 0)

    return write


def _require_session(spark) -> None:
    if spark is None:
        raise RuntimeError("[feast] write_from = \"spark\": publish needs a Spark session (run it through "
                           "`metaemb run` or spark-submit metaemb/jobs.py, not as a plain Python task)")


def train_on(spark: "SparkSession", cfg: Config, run_date: dt.date, inputs: labeled.Inputs, *,
             allow_empty_day: bool = False, progress: Callable[[str], None] = print) -> dict:
    """Build the window ending run_date, then train: what `metaemb train` and the retrain DAG run."""
    from pipelines import train as train_job

    for result in (labeled.run(spark, cfg, inputs, run_date, allow_empty_day=allow_empty_day),
                   samples.run(spark, cfg, run_date)):
        progress(f"[{run_date}] {result['stage']}: {describe(result)}")
    result = train_job.run(spark, cfg, run_date, inputs, progress=progress)
    result["rows"] = result["tasks"]
    return result


def run_daily(spark: "SparkSession", cfg: Config, run_date: dt.date, inputs: labeled.Inputs, *,
              stages: tuple[str, ...] = DAILY, model_version: str | None = None,
              allow_empty_day: bool = False, progress: Callable[[str], None] = print) -> list[dict]:
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
    for key in ("dates_computed", "samples", "build", "model_version", "method", "tasks_per_s", "finetune_s", "online",
                "model_switch"):
        if key in result:
            value = result[key]
            parts.append(f"{key}={value:,.0f}" if isinstance(value, float) else f"{key}={value}")
    if result.get("quarantined"):
        parts.append("quarantined=" + ",".join(f"{k}:{v}" for k, v in result["quarantined"].items()))
    return ", ".join(parts)
