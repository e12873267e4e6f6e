"""Reading inputs and reading/writing the pipeline's Delta tables."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from core import tables
from core.config import Config
from pipelines.contract import input_format


def read_input(spark: SparkSession, path: Path) -> DataFrame:
    fmt = input_format(path)
    if fmt == "csv":
        return spark.read.option("header", True).option("inferSchema", True).csv(str(path))
    return spark.read.format(fmt).load(str(path))


def table_exists(cfg: Config, name: str) -> bool:
    return (cfg.table_path(name) / "_delta_log").is_dir()


def read_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    return spark.read.format("delta").load(str(cfg.table_path(name)))


def sql_date(d: dt.date) -> str:
    return f"DATE'{d.isoformat()}'"


def replace_partitions(df: DataFrame, cfg: Config, name: str, column: str, dates: list[dt.date]) -> None:
    """Overwrite exactly the given date partitions in one atomic Delta commit.

    A rerun of a date replaces that date and nothing else; a crash before the commit
    leaves the table as it was (Delta's log is the switch).
    """
    predicate = f"{column} IN ({', '.join(sql_date(d) for d in sorted(set(dates)))})"
    (df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
       .partitionBy(column).save(str(cfg.table_path(name))))


def log_stage(spark: SparkSession, cfg: Config, stage: str, rows_by_date: dict[dt.date, int],
              seconds: float, detail: str = "") -> None:
    """Append completion records (one per date) to the stage_log table (read by `metaemb status`)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = [(stage, d, int(n), float(seconds), detail, now) for d, n in sorted(rows_by_date.items())]
    df = spark.createDataFrame(rows, "stage string, run_date date, rows long, seconds double, detail string, "
                                    "completed_at timestamp")
    df.write.format("delta").mode("append").save(str(cfg.table_path(tables.STAGE_LOG)))


def completed_dates(cfg: Config, stage: str) -> set[dt.date]:
    """Dates a stage has completed, read from stage_log's files directly (a Spark job cost ~4 s)."""
    from pipelines.contract import read_table as read_delta_files

    if not table_exists(cfg, tables.STAGE_LOG):
        return set()
    log = read_delta_files(cfg.table_path(tables.STAGE_LOG), ["stage", "run_date"]).to_pandas()
    return set(log.loc[log["stage"] == stage, "run_date"])


def stage_detail(cfg: Config, stage: str, run_date: dt.date) -> str:
    """The detail of the stage's latest stage_log record for run_date ("" when none)."""
    from pipelines.contract import read_table as read_delta_files

    if not table_exists(cfg, tables.STAGE_LOG):
        return ""
    log = read_delta_files(cfg.table_path(tables.STAGE_LOG), ["stage", "run_date", "detail", "completed_at"]).to_pandas()
    log = log[(log["stage"] == stage) & (log["run_date"] == run_date)].sort_values("completed_at")
    return str(log["detail"].iloc[-1]) if len(log) else ""


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
