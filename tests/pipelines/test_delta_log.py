"""pipelines.delta_log replays real Delta logs (Spark-written, with checkpoints) to Spark's file list."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines import delta_log

DAYS = [dt.date(2026, 10, d) for d in (1, 2, 3)]


def write_day(spark, path: Path, day: dt.date, rows: int, files: int) -> None:
    df = (spark.range(rows).repartition(files)
          .select(F.col("id"), (F.col("id") * 0.5).alias("x"), F.lit(day).alias("run_date")))
    (df.write.format("delta").mode("overwrite").option("replaceWhere", f"run_date = DATE'{day}'")
     .partitionBy("run_date").save(str(path)))


def spark_files(spark, path: Path, day: dt.date | None = None) -> list[Path]:
    df = spark.read.format("delta").load(str(path))
    if day is not None:
        df = df.where(F.col("run_date") == F.lit(day))
    return sorted(Path(f.removeprefix("file:")) for f in df.inputFiles())


def test_replay_equals_spark_across_checkpoints_and_overwrites(spark, tmp_path):
    path = tmp_path / "t"
    write_day(spark, path, DAYS[0], 40, 2)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval' = '3')")
    for i in range(7):  # rewrites of each day: removes, adds, and checkpoints at versions 3 and 6
        write_day(spark, path, DAYS[i % 3], 30 + i, 1 + i % 3)
    log_dir = path / "_delta_log"
    assert list(log_dir.glob("*.checkpoint.parquet")), "the test needs a checkpoint in the log"

    snap = delta_log.snapshot(path)
    assert snap.version == 8
    assert snap.configuration.get("delta.checkpointInterval") == "3"
    assert snap.partition_columns == ["run_date"]
    assert snap.parquet_files() == spark_files(spark, path)
    for day in DAYS:
        got = snap.parquet_files({"run_date": day.isoformat()})
        assert got and got == spark_files(spark, path, day)

    # the commits before the checkpoint are not needed (log cleanup deletes them)
    for f in log_dir.glob("0000000000000000000[0-5].json"):
        f.unlink()
    assert delta_log.snapshot(path).parquet_files() == spark_files(spark, path)


def test_a_gap_in_the_log_or_a_newer_protocol_is_refused(spark, tmp_path):
    path = tmp_path / "t"
    for day in DAYS:
        write_day(spark, path, day, 10, 1)
    gap = tmp_path / "gap"
    shutil.copytree(path, gap)
    (gap / "_delta_log" / f"{1:020d}.json").unlink()
    with pytest.raises(delta_log.DeltaLogError, match="not contiguous"):
        delta_log.snapshot(gap)

    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    snap = delta_log.snapshot(path)
    assert snap.min_reader_version >= 3
    with pytest.raises(delta_log.DeltaLogError, match="minReaderVersion"):
        snap.parquet_files()
    with pytest.raises(delta_log.DeltaLogError, match="no readable _delta_log"):
        delta_log.snapshot(tmp_path / "nothing")


def test_input_checks_skip_row_counts_on_a_delta_table_only_spark_can_read(spark, tmp_path):
    from pipelines import contract
    from tests.conftest import make_config

    path = tmp_path / "interactions"
    (spark.range(20).select(F.col("id").cast("string").alias("user_id"), F.lit(7).alias("item_id"),
                            F.timestamp_seconds(F.lit(1_790_000_000) + F.col("id")).alias("event_timestamp"),
                            (F.col("id") % 2).alias("label"))
     .write.format("delta").save(str(path)))
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    [report] = contract.validate_inputs(make_config(tmp_path), path, None)
    assert report.ok, report.problems
    assert any("row checks skipped" in line and "minReaderVersion" in line for line in report.lines())
