"""The one place a SparkSession is built: Delta jars from the project folder, master from config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from core.config import Config

log = logging.getLogger(__name__)


class SetupError(RuntimeError):
    """The environment is missing something set-up provides (run scripts/setup.sh)."""


def delta_jars(cfg: Config) -> list[Path]:
    jars = sorted(cfg.path(cfg.spark.jars_dir).glob("delta-*.jar"))
    names = " ".join(j.name for j in jars)
    if "delta-spark" not in names or "delta-storage" not in names:
        raise SetupError(
            f"Delta Lake jars not found in {cfg.path(cfg.spark.jars_dir)}: run scripts/setup.sh "
            "(it fetches io.delta:delta-spark and delta-storage from Maven Central once)"
        )
    return jars


def spark_conf(cfg: Config) -> dict[str, str]:
    """Spark settings shared by the in-process session and spark-submit (Airflow)."""
    conf = {
        "spark.jars": ",".join(str(j) for j in delta_jars(cfg)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.task.cpus": str(cfg.spark.task_cpus),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds table state with 50 partitions by default: pure overhead for a
        # log of a few hundred commits, and it dominated small runs here.
        "spark.databricks.delta.snapshotPartitions": str(max(2, cfg.spark.shuffle_partitions // 4)),
        # Python workers must run the same interpreter as the driver (the project venv).
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    if cfg.spark.driver_java_options:
        conf["spark.driver.extraJavaOptions"] = cfg.spark.driver_java_options
    if cfg.spark.executor_gpus > 0:
        conf.update({
            "spark.executor.resource.gpu.amount": str(cfg.spark.executor_gpus),
            "spark.task.resource.gpu.amount": str(cfg.spark.task_gpus or 1.0 / cfg.spark.executor_gpus),
            "spark.executor.resource.gpu.discoveryScript": str(cfg.path(cfg.spark.gpu_discovery_script)),
        })
    return conf


def get_spark(cfg: Config, app_name: str = "metaemb") -> SparkSession:
    """Return the active session or build one from config (one per process)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name).master(cfg.spark.master)
    for key, value in spark_conf(cfg).items():
        builder = builder.config(key, value)
    log.info("starting Spark (%s)", cfg.spark.master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
