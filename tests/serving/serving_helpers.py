"""Helpers for the serving tests: rows of meta_embeddings written by Spark, configs as TOML files."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np

from core import tables


def event_ts(run_date: date) -> datetime:
    return datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc) + timedelta(days=1)


def write_meta_embeddings(spark, cfg, run_date: date, keys, emb: np.ndarray, *,
                          model_version: str = "v1", n_samples=None) -> None:
    """Write (replace) the run_date partition of meta_embeddings: keys[i] -> emb[i]."""
    import pandas as pd
    from pyspark.sql import types as T

    key_cols = cfg.data.task_key
    keys = [k if isinstance(k, tuple) else (k,) for k in keys]
    n = len(keys)
    pdf = pd.DataFrame({c: [str(k[i]) for k in keys] for i, c in enumerate(key_cols)})
    pdf[tables.EMBEDDING] = list(np.asarray(emb, dtype=np.float32))
    pdf[tables.N_SAMPLES] = np.asarray(n_samples if n_samples is not None else
                                       (np.arange(n) % 50) + 1, dtype=np.int32)
    pdf[tables.MODEL_VERSION] = model_version
    pdf[tables.EVENT_TIMESTAMP] = pd.Timestamp(event_ts(run_date))
    pdf[tables.CREATED_TIMESTAMP] = pd.Timestamp(datetime.now(timezone.utc))
    pdf[tables.RUN_DATE] = run_date
    schema = T.StructType(
        [T.StructField(c, T.StringType(), False) for c in key_cols]
        + [
            T.StructField(tables.EMBEDDING, T.ArrayType(T.FloatType(), False), False),
            T.StructField(tables.N_SAMPLES, T.IntegerType(), False),
            T.StructField(tables.MODEL_VERSION, T.StringType(), False),
            T.StructField(tables.EVENT_TIMESTAMP, T.TimestampType(), False),
            T.StructField(tables.CREATED_TIMESTAMP, T.TimestampType(), False),
            T.StructField(tables.RUN_DATE, T.DateType(), False),
        ]
    )
    df = spark.createDataFrame(pdf, schema=schema)
    path = str(cfg.table_location(tables.META_EMBEDDINGS))
    (df.write.format("delta").mode("overwrite").partitionBy(tables.RUN_DATE)
     .option("replaceWhere", f"{tables.RUN_DATE} = '{run_date.isoformat()}'").save(path))


def toml_file(cfg, path):
    """The config as a TOML file that `metaemb --config` loads."""
    from core.config import write

    return write(cfg, path)


def random_embeddings(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
