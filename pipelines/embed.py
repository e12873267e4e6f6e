"""Stage 3, meta_embeddings: fine-tune the meta block per task and embed (Algorithm 2b).

Fan-out: task_samples rows (one task each) are spread over `task_buckets` partitions and
handed to `mapInArrow` in batches of `finetune_batch_tasks` tasks; each batch becomes one
padded TaskBatch and one vectorized `models.finetune_embed` call. Arrow list columns are
unpacked with offsets (no per-task Python work), and torch uses exactly spark.task.cpus
threads (oversubscribed threads made a tiny step ~50x slower).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import stages, tables
from core.config import Config
from pipelines import lake, spark_io
from pipelines.faults import kill_point

log = logging.getLogger(__name__)
STAGE = stages.EMBED


class ModelMismatchError(ValueError):
    """The checkpoint was trained on other feature columns than the data has."""


def _padded(values: np.ndarray, lengths: np.ndarray, width: int, dtype) -> np.ndarray:
    """Scatter a flat per-sample array into [tasks, max_len(, width)] with zero padding."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(len(rows)) - np.repeat(starts, lengths)
    shape = (len(lengths), int(lengths.max())) + ((width,) if width >= 0 else ())
    out = np.zeros(shape, dtype=dtype)
    out[rows, pos] = values.reshape((len(rows), width)) if width >= 0 else values
    return out


def task_batch(batch: pa.RecordBatch, meta_dim: int, context_dim: int, with_split: bool = False):
    """One padded models.TaskBatch from a record batch of task_samples rows."""
    from models.data import TaskBatch

    lengths = batch.column("n_samples").to_numpy().astype(np.int64)
    flat = lambda name: batch.column(name).flatten().to_numpy(zero_copy_only=False)  # noqa: E731
    return TaskBatch(
        x_meta=_padded(flat("meta").astype(np.float32), lengths, meta_dim, np.float32),
        x_other=_padded(flat("context").astype(np.float32), lengths, context_dim, np.float32),
        item_ids=_padded(flat("item_hashes").astype(np.int64), lengths, -1, np.int64),
        labels=_padded(flat("labels").astype(np.float32), lengths, -1, np.float32),
        lengths=lengths,
        task_ids=batch.column("task_hash").to_numpy().astype(np.int64),
        n_support=batch.column("n_support").to_numpy().astype(np.int64) if with_split else None,
    )


def output_schema(keys: list[str]) -> str:
    cols = [f"`{k}` string" for k in keys]
    cols += [f"{tables.EMBEDDING} array<float>", f"{tables.N_SAMPLES} int", f"{tables.MODEL_VERSION} string",
             f"{tables.EVENT_TIMESTAMP} timestamp", f"{tables.CREATED_TIMESTAMP} timestamp",
             f"{tables.RUN_DATE} date"]
    return ", ".join(cols)


def make_embedder(ckpt, keys: list[str], run_date: dt.date, cfg: Config, threads: int, torch_seconds=None):
    """The function mapInArrow runs on each partition (shipped with the checkpoint inside).
    torch_seconds: an optional Spark accumulator that sums the workers' fine-tune time. Each
    task is fine-tuned with its support-size bucket's (steps, lr): the checkpoint's validation
    choice, or [finetune] steps / lr where the config sets them (models.choice.resolve)."""
    from models.choice import resolve

    fine_tune = cfg.finetune
    choice = resolve(ckpt, fine_tune.steps, fine_tune.lr)
    meta_dim, context_dim = len(ckpt.meta_columns), len(ckpt.context_columns)
    valid_from = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    version = ckpt.version

    def embed_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch

        from models.choice import finetune_chosen
        from models.data import NonFiniteEmbeddingError

        torch.set_num_threads(threads)
        device = fine_tune.device if fine_tune.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        for batch in batches:
            if batch.num_rows == 0:
                continue
            started = time.perf_counter()
            try:
                emb = finetune_chosen(ckpt, task_batch(batch, meta_dim, context_dim), choice,
                                      pooling=fine_tune.pooling, device=device, min_samples=fine_tune.min_samples)
            except NonFiniteEmbeddingError as e:
                bad = [tuple(batch.column(k)[i].as_py() for k in keys) for i in e.task_indices[:10]]
                raise NonFiniteEmbeddingError(e.task_indices, f"NaN/inf embedding for {len(e.task_indices)} "
                                              f"task(s) of run {run_date}, keys {keys}: {bad}") from e
            if torch_seconds is not None:
                torch_seconds.add(time.perf_counter() - started)
            kill_point("embed:after-first-batch")
            n, width = emb.shape
            now = dt.datetime.now(dt.timezone.utc)
            yield pa.RecordBatch.from_arrays(
                [batch.column(k) for k in keys] + [
                    pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                                             pa.array(emb.reshape(-1).astype(np.float32))),
                    batch.column("n_samples").cast(pa.int32()),
                    pa.array([version] * n, pa.string()),
                    pa.array([valid_from] * n, pa.timestamp("us", tz="UTC")),
                    pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                    pa.array([run_date] * n, pa.date32()),
                ],
                names=keys + [tables.EMBEDDING, tables.N_SAMPLES, tables.MODEL_VERSION, tables.EVENT_TIMESTAMP,
                              tables.CREATED_TIMESTAMP, tables.RUN_DATE])

    return embed_partition


def check_columns(ckpt, context: tuple[str, ...], meta: tuple[str, ...]) -> None:
    problems = []
    if list(ckpt.context_columns) != list(context):
        problems.append(f"context columns: model {list(ckpt.context_columns)} vs data {list(context)}")
    if list(ckpt.meta_columns) != list(meta):
        problems.append(f"meta feature columns: model {list(ckpt.meta_columns)} vs data {list(meta)}")
    if problems:
        raise ModelMismatchError(
            f"model {ckpt.version} was trained on other columns than the input has ({'; '.join(problems)}); "
            "retrain (`metaemb train`) or set [data] context_columns / meta_feature_columns to the model's")


def run(spark: SparkSession, cfg: Config, run_date: dt.date, ckpt) -> dict:
    keys = list(cfg.data.task_key)
    with lake.Timer() as t:
        samples = spark_io.read_table(spark, cfg, tables.TASK_SAMPLES).where(F.col("run_date") == F.lit(run_date))
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.pipeline.finetune_batch_tasks))
        threads = int(spark.conf.get("spark.task.cpus", "1"))
        # Never more partitions than full batches: each one costs a Python worker its torch
        # import and a model copy, which dominated small runs.
        tasks = samples.count()
        buckets = max(1, min(cfg.pipeline.task_buckets, -(-tasks // cfg.pipeline.finetune_batch_tasks)))
        torch_seconds = spark.sparkContext.accumulator(0.0)
        embedder = make_embedder(ckpt, keys, run_date, cfg, threads, torch_seconds)
        embedded = samples.repartition(buckets).mapInArrow(embedder, output_schema(keys))
        spark_io.replace_partitions(embedded, cfg, tables.META_EMBEDDINGS, "run_date", [run_date])
        rows = (spark_io.read_table(spark, cfg, tables.META_EMBEDDINGS)
                .where(F.col("run_date") == F.lit(run_date)).count())
    lake.log_stage(cfg, STAGE, {run_date: rows}, t.seconds, f"model={ckpt.version}")
    # finetune_s: fine-tune time summed over the workers; the rest of the stage is Spark
    # (read, shuffle, Arrow transfer, Delta write) and its share shows in the bench output
    from models.choice import resolve

    return {"stage": STAGE, "rows": rows, "seconds": t.seconds, "tasks_per_s": rows / max(t.seconds, 1e-9),
            "model_version": ckpt.version, "finetune_s": round(torch_seconds.value, 1), "partitions": buckets,
            "finetune": resolve(ckpt, cfg.finetune.steps, cfg.finetune.lr).describe()}
