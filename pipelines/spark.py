"""The one place a SparkSession is built: Delta jars from the project folder, master from config.

The settings (spark_conf, the S3A jars) need no pyspark: spark-submit's command line and Feast's
offline-store config are built from them in processes that start no JVM."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core import storage
from core.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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


# hadoop-aws matching pyspark's bundled Hadoop client, and the AWS SDK it is built against;
# scripts/setup.sh fetches them only when the config or the tests use S3 (the SDK is 686 MB).
S3_JARS = ("hadoop-aws-3.5.0.jar", "bundle-2.35.4.jar", "analyticsaccelerator-s3-1.3.1.jar")


def s3_jars(cfg: Config) -> list[Path]:
    folder = cfg.path(cfg.spark.jars_dir)
    missing = [name for name in S3_JARS if not (folder / name).is_file()]
    if missing:
        raise SetupError(f"S3 connector jars not found in {folder}: {', '.join(missing)}; run "
                         "`METAEMB_S3_JARS=1 bash scripts/setup.sh` (fetches hadoop-aws and the AWS SDK once)")
    return [folder / name for name in S3_JARS]


def s3_spark_conf(cfg: Config) -> dict[str, str]:
    """S3A settings (endpoint, region, path style, timeouts) and its jars; credentials stay in the
    environment. The jars go on the class path of driver and executors, not in spark.jars: the
    same folder exists on every node (set-up, the image), and spark.jars would copy the 686 MB
    SDK to each executor of each application."""
    classpath = os.pathsep.join(str(j) for j in s3_jars(cfg))
    return {**storage.S3Settings.resolve(cfg.s3).spark_conf(),
            "spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath}


def spark_conf(cfg: Config, s3: bool | None = None) -> dict[str, str]:
    """Spark settings shared by the in-process session and spark-submit (Airflow).

    The S3A connector is added when the config puts a location on S3 (or s3=True)."""
    s3 = cfg.uses_s3() if s3 is None else s3
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
    if s3:
        conf.update(s3_spark_conf(cfg))
    if cfg.spark.driver_java_options:
        conf["spark.driver.extraJavaOptions"] = cfg.spark.driver_java_options
    if cfg.spark.executor_gpus > 0:
        conf.update({
            "spark.executor.resource.gpu.amount": str(cfg.spark.executor_gpus),
            "spark.task.resource.gpu.amount": str(cfg.spark.task_gpus or 1.0 / cfg.spark.executor_gpus),
            "spark.executor.resource.gpu.discoveryScript": str(cfg.path(cfg.spark.gpu_discovery_script)),
        })
    return conf


def get_spark(cfg: Config, app_name: str = "metaemb", s3: bool | None = None) -> "SparkSession":
    """Return the active session or build one from config (one per process)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name).master(cfg.spark.master)
    for key, value in spark_conf(cfg, s3).items():
        builder = builder.config(key, value)
    log.info("starting Spark (%s)", cfg.spark.master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
