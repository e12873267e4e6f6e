"""The check stage verifies what the day's publish did (in-process, the shared Spark session):
a pushed day must be served; a re-processed older day is complete in Delta while the online
store still serves the newer day unchanged; anything else fails with the reason."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from project_helpers import own_lake_config
from core import tables
from metaemb.daily import run_daily
from pipelines import labeled, spark_io
from serving.check import CheckError, check

pytestmark = pytest.mark.spark

D1, D2, D3 = dt.date(2026, 10, 25), dt.date(2026, 10, 26), dt.date(2026, 10, 27)


def test_check_follows_what_publish_did(airflow_project, spark, tmp_path):
    cfg = own_lake_config(airflow_project, tmp_path, "checkstage")
    inputs = labeled.resolve_inputs(cfg)
    quiet = dict(progress=lambda _: None)
    pushed = run_daily(spark, cfg, D1, inputs, **quiet)[-1]
    assert pushed["online"] == f"published; online serves {D1}"
    run_daily(spark, cfg, D2, inputs, **quiet)

    # D1 again while D2 is online: rewritten in Delta, not pushed, and check passes.
    again = run_daily(spark, cfg, D1, inputs, **quiet)
    assert again[3]["rows"] == 0  # publish pushed nothing
    assert again[-1]["online"] == f"written; online serves {D2}"
    assert again[-1]["sampled_lookups"] > 0

    # The online store no longer holds what D2's partition says: check of D1 says so.
    emb = spark_io.read_table(spark, cfg, tables.META_EMBEDDINGS).where(F.col(tables.RUN_DATE) == F.lit(D2))
    doubled = emb.withColumn(tables.EMBEDDING, F.transform(tables.EMBEDDING, lambda x: x * F.lit(2.0).cast("float"))).localCheckpoint()
    spark_io.replace_partitions(doubled, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, [D2])
    with pytest.raises(CheckError, match=f"online store does not serve {D2}'s embeddings"):
        check(cfg, D1)

    # A day publish never ran for.
    run_daily(spark, cfg, D3, inputs, stages=("labeled", "samples", "embed"), **quiet)
    with pytest.raises(CheckError, match=f"publish_log has no row for {D3}"):
        check(cfg, D3)
