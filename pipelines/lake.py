"""The pipeline's Delta tables without Spark: storage checks, one day's partition read as Arrow
(delta-rs), and the stage_log. Spark's reads and writes are in pipelines/spark_io.py; a session
starts here only when delta-rs refuses a table (read_day's fallback)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import pyarrow as pa

from core import tables
from core.config import Config
from core.storage import Location
from pipelines import delta_tables

log = logging.getLogger(__name__)


def check_storage(cfg: Config) -> None:
    """Reach storage_root and checkpoint_dir once, before Spark starts: a missing bucket,
    refused credentials or a silent endpoint fail here, in seconds, naming the URI."""
    for value in (cfg.pipeline.storage_root, cfg.model.checkpoint_dir):
        cfg.location(value).check_access()


def table_exists(cfg: Config, name: str) -> bool:
    return delta_tables.exists(cfg.table_location(name))


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
    from pipelines.spark_io import read_table

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


@dataclass(frozen=True)
class DayFiles:
    """One date partition of a stage table as its data files at one table version: a day that
    several processes (Spark tasks) read in parts, each its own files, through delta-rs."""

    where: Location
    version: int
    run_date: dt.date
    columns: tuple[str, ...]
    paths: tuple[str, ...]

    def scan(self, paths: Collection[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The rows of these of the day's files (at the listed version: a later commit does not
        change what a task reads)."""
        for batch in delta_tables.scan(self.where, list(self.columns), filters=[(tables.RUN_DATE, "=", self.run_date)],
                                       batch_rows=batch_rows, files=paths, version=self.version):
            yield batch.select(list(self.columns))


def day_files(cfg: Config, name: str, run_date: dt.date, columns: list[str]) -> DayFiles:
    """The run_date partition's files; DeltaReadError where delta-rs refuses the table (then
    Spark has to read it)."""
    where = cfg.table_location(name)
    version, paths = delta_tables.data_files(where, filters=[(tables.RUN_DATE, "=", run_date)])
    return DayFiles(where, version, run_date, tuple(columns), tuple(paths))


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
