"""delta-rs (pipelines.delta_tables) reads what Spark wrote; tables its Arrow path refuses fall back."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from core import tables
from pipelines import contract, delta_tables, lake
from project_helpers import make_config

pytestmark = pytest.mark.spark

DAYS = [dt.date(2026, 10, d) for d in (1, 2, 3)]


def write_day(spark, path, day: dt.date, rows: int, files: int) -> None:
    df = (spark.range(rows).repartition(files)
          .select(F.col("id").cast("string").alias("user_id"), (F.col("id") * 0.5).alias("x"),
                  F.lit(day).alias("run_date")))
    (df.write.format("delta").mode("overwrite").option("replaceWhere", f"run_date = DATE'{day}'")
     .partitionBy("run_date").save(str(path)))


def spark_rows(spark, path, day: dt.date) -> list[tuple]:
    df = spark.read.format("delta").load(str(path)).where(F.col("run_date") == F.lit(day))
    return sorted((r.user_id, r.x) for r in df.collect())


def arrow_rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(table["user_id"].to_pylist(), table["x"].to_pylist()))


def test_reads_equal_spark_across_checkpoints_and_overwrites(spark, tmp_path):
    cfg = make_config(tmp_path)
    path = cfg.table_location(tables.TASK_SAMPLES)
    write_day(spark, path, DAYS[0], 40, 2)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '3')")
    for i in range(7):  # rewrites of each day: removes, adds, and checkpoints at versions 3 and 6
        write_day(spark, path, DAYS[i % 3], 30 + i, 1 + i % 3)
    assert any(c.name.endswith(".checkpoint.parquet") for c in (path / "_delta_log").children()), "the test needs a checkpoint"
    for day in DAYS:
        got = lake.read_day(cfg, tables.TASK_SAMPLES, day, ["user_id", "x"])
        assert got.num_rows and arrow_rows(got) == spark_rows(spark, path, day)
        streamed = list(lake.scan_day(cfg, tables.TASK_SAMPLES, day, ["user_id", "x"], batch_rows=4))
        assert max(b.num_rows for b in streamed) <= 4 and len(streamed) > 1
        assert arrow_rows(pa.Table.from_batches(streamed)) == arrow_rows(got)
    assert delta_tables.schema(path).field("run_date").type == pa.date32()
    with pytest.raises(delta_tables.DeltaReadError, match="cannot open"):
        delta_tables.read(tmp_path / "nothing")


def test_a_day_split_by_files_reads_each_row_once_at_the_listed_version(spark, tmp_path):
    """What the executor publish does: the driver lists the day's files, tasks read their share."""
    cfg = make_config(tmp_path)
    path = cfg.table_location(tables.TASK_SAMPLES)
    write_day(spark, path, DAYS[0], 50, 3)
    write_day(spark, path, DAYS[1], 40, 1)
    day = lake.day_files(cfg, tables.TASK_SAMPLES, DAYS[0], ["user_id", "x"])
    assert len(day.paths) == 3 and all("run_date=2026-10-01" in p for p in day.paths)
    want = spark_rows(spark, path, DAYS[0])
    write_day(spark, path, DAYS[0], 7, 1)  # a rewrite after the listing: the tasks still read the listed version
    parts = [pa.Table.from_batches(list(day.scan(share, batch_rows=8))) for share in (day.paths[:1], day.paths[1:])]
    assert parts[0].num_rows and parts[1].num_rows and parts[0].column_names == ["user_id", "x"]
    assert sorted(arrow_rows(parts[0]) + arrow_rows(parts[1])) == want
    assert not list(day.scan([]))


def test_a_table_with_deletion_vectors_falls_back_to_spark(spark, tmp_path):
    cfg = make_config(tmp_path)
    path = cfg.table_location(tables.TASK_SAMPLES)
    for day in DAYS:
        write_day(spark, path, day, 10, 1)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    spark.sql(f"DELETE FROM delta.`{path}` WHERE user_id = '3'")
    with pytest.raises(delta_tables.DeltaReadError, match="refused"):
        delta_tables.read(path, ["user_id", "x"])
    with pytest.raises(delta_tables.DeltaReadError, match="refused"):
        lake.day_files(cfg, tables.TASK_SAMPLES, DAYS[1], ["user_id", "x"])  # the executor publish then reads with Spark
    got = lake.read_day(cfg, tables.TASK_SAMPLES, DAYS[1], ["user_id", "x"])  # through Spark
    assert arrow_rows(got) == spark_rows(spark, path, DAYS[1]) and got.num_rows == 9
    streamed = pa.Table.from_batches(lake.scan_day(cfg, tables.TASK_SAMPLES, DAYS[1], ["user_id", "x"], batch_rows=4))
    assert arrow_rows(streamed) == arrow_rows(got)


def test_input_checks_skip_row_counts_on_a_delta_table_only_spark_can_read(spark, tmp_path):
    path = tmp_path / "interactions"
    (spark.range(20).select(F.col("id").cast("string").alias("user_id"), F.lit(7).alias("item_id"),
                            F.timestamp_seconds(F.lit(1_790_000_000) + F.col("id")).alias("event_timestamp"),
                            (F.col("id") % 2).alias("label"))
     .write.format("delta").save(str(path)))
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    spark.sql(f"DELETE FROM delta.`{path}` WHERE user_id = '3'")
    [report] = contract.validate_inputs(make_config(tmp_path), path, None)
    assert report.ok, report.problems
    assert any("row checks skipped" in line and "refused" in line for line in report.lines()), report.lines()
