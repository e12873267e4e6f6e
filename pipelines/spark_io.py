"""Spark's reads and writes of the inputs and the pipeline's Delta tables."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.config import Config
from core.storage import Location, as_location
from pipelines import contract

NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def read_input(spark: SparkSession, where: Location) -> DataFrame:
    """An input (Parquet, CSV or Delta) as the contract reads it: nanosecond timestamps
    (pandas' default Parquet) arrive as microsecond timestamps, sub-microsecond digits dropped."""
    where = as_location(where)
    fmt = contract.input_format(where)
    if fmt == "csv":
        return spark.read.option("header", True).option("inferSchema", True).csv(where.spark_uri)
    nanos = contract.nanosecond_columns(contract.file_schema(where)) if fmt == "parquet" else []
    if nanos:
        # Spark refuses TIMESTAMP(NANOS) unless it reads them as longs (ns since the epoch).
        spark.conf.set(NANOS_AS_LONG, "true")
    df = spark.read.format(fmt).load(where.spark_uri)
    for c in nanos:
        # Integer division: truncates like Arrow's cast ns -> us in the contract's reader.
        df = df.withColumn(c, F.timestamp_micros(F.expr(f"`{c}` div 1000")))
    return df


def read_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    return spark.read.format("delta").load(cfg.table_location(name).spark_uri)


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
