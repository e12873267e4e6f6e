"""Reading inputs and reading/writing the pipeline's Delta tables."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from core import tables
from core.config import Config
from core.storage import Location, as_location
from pipelines import delta_tables
from pipelines.contract import input_format

log = logging.getLogger(__name__)


def read_input(spark: SparkSession, where: Location) -> DataFrame:
    where = as_location(where)
    fmt = input_format(where)
    if fmt == "csv":
        return spark.read.option("header", True).option("inferSchema", True).csv(where.spark_uri)
    return spark.read.format(fmt).load(where.spark_uri)


def check_storage(cfg: Config) -> None:
    """Reach storage_root and checkpoint_dir once, before Spark starts: a missing bucket,
    refused credentials or a silent endpoint fail here, in seconds, naming the URI."""
    for value in (cfg.pipeline.storage_root, cfg.model.checkpoint_dir):
        cfg.location(value).check_access()


def table_exists(cfg: Config, name: str) -> bool:
    return delta_tables.exists(cfg.table_location(name))


def read_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    return spark.read.format("delta").load(cfg.table_location(name).spark_uri)


def read_day(cfg: Config, name: str, run_date: dt.date, columns: list[str],
             date_column: str = tables.RUN_DATE) -> pa.Table:
    """One date partition of a stage table as Arrow, on the driver: delta-rs, no Spark.

    A table delta-rs' Arrow reader refuses (deletion vectors, column mapping) is read through
    Spark instead; only then does a session start.
    """
    path = cfg.table_location(name)
    try:
        return delta_tables.read(path, columns, filters=[(date_column, "=", run_date)]).select(columns)
    except delta_tables.DeltaReadError as e:
        log.info("reading %s through Spark (%s)", path, e)
    from pyspark.sql import functions as F

    from pipelines.spark import get_spark

    df = read_table(get_spark(cfg), cfg, name).where(F.col(date_column) == F.lit(run_date))
    return df.select(*columns).toArrow()


def scan_day(cfg: Config, name: str, run_date: dt.date, columns: list[str],
             batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """read_day's rows as a stream of Arrow batches (memory: one batch, not the day).
    The Spark fallback for a table delta-rs refuses collects the day first."""
    path = cfg.table_location(name)
    try:
        batches = delta_tables.scan(path, columns, filters=[(tables.RUN_DATE, "=", run_date)], batch_rows=batch_rows)
        first = next(batches, None)  # a refusal surfaces at the first batch
    except delta_tables.DeltaReadError as e:
        log.info("reading %s through Spark (%s)", path, e)
        yield from read_day(cfg, name, run_date, columns).to_batches(max_chunksize=batch_rows)
        return
    if first is not None:
        yield first.select(columns)
        for batch in batches:
            yield batch.select(columns)


def sql_date(d: dt.date) -> str:
    return f"DATE'{d.isoformat()}'"


def replace_partitions(df: DataFrame, cfg: Config, name: str, column: str, dates: list[dt.date]) -> None:
    """Overwrite exactly the given date partitions in one atomic Delta commit.

    A rerun of a date replaces that date and nothing else; a crash before the commit
    leaves the table as it was (Delta's log is the switch).
    """
    predicate = f"{column} IN ({', '.join(sql_date(d) for d in sorted(set(dates)))})"
    (df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
       .partitionBy(column).save(cfg.table_location(name).spark_uri))


STAGE_LOG_SCHEMA = pa.schema([("stage", pa.string()), ("run_date", pa.date32()), ("rows", pa.int64()),
                              ("seconds", pa.float64()), ("detail", pa.string()),
                              ("completed_at", pa.timestamp("us", tz="UTC"))])


def log_stage(cfg: Config, stage: str, rows_by_date: dict[dt.date, int], seconds: float, detail: str = "") -> None:
    """Append completion records (one per date) to the stage_log table (read by `metaemb status`)."""
    now = dt.datetime.now(dt.timezone.utc)
    days = sorted(rows_by_date)
    rows = {"stage": [stage] * len(days), "run_date": days, "rows": [int(rows_by_date[d]) for d in days],
            "seconds": [float(seconds)] * len(days), "detail": [detail] * len(days), "completed_at": [now] * len(days)}
    delta_tables.append(cfg.table_location(tables.STAGE_LOG), pa.table(rows, schema=STAGE_LOG_SCHEMA))


def stage_log(cfg: Config, columns: list[str]):
    """The stage_log table as pandas (None before the first stage completed)."""
    if not table_exists(cfg, tables.STAGE_LOG):
        return None
    return delta_tables.read(cfg.table_location(tables.STAGE_LOG), columns).to_pandas()


def completed_dates(cfg: Config, stage: str) -> set[dt.date]:
    """Dates a stage has completed."""
    log = stage_log(cfg, ["stage", "run_date"])
    return set() if log is None else set(log.loc[log["stage"] == stage, "run_date"])


def stage_detail(cfg: Config, stage: str, run_date: dt.date) -> str:
    """The detail of the stage's latest stage_log record for run_date ("" when none)."""
    log = stage_log(cfg, ["stage", "run_date", "detail", "completed_at"])
    if log is None:
        return ""
    log = log[(log["stage"] == stage) & (log["run_date"] == run_date)].sort_values("completed_at")
    return str(log["detail"].iloc[-1]) if len(log) else ""


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
