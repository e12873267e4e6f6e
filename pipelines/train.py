"""Retraining (Algorithm 2a) on one run date's task_samples (support/query split per task), and the
serving artifact written beside each checkpoint."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core import artifact_contract, stages, tables
from core.config import Config
from core.storage import Location
from pipelines import lake, spark_io
from pipelines.embed import task_batch
from pipelines.labeled import Inputs

log = logging.getLogger(__name__)
STAGE = stages.TRAIN


def load_tasks(spark: SparkSession, cfg: Config, run_date: dt.date, inputs: Inputs, max_tasks: int | None = None):
    rows = (spark_io.read_table(spark, cfg, tables.TASK_SAMPLES).where(F.col("run_date") == F.lit(run_date))
            .where(F.col("n_samples") >= 2).orderBy("task_hash"))
    if max_tasks:
        rows = rows.limit(max_tasks)
    table = rows.toArrow()
    if table.num_rows == 0:
        raise ValueError(f"task_samples has no task with >= 2 samples for {run_date}: run `metaemb run "
                         f"--date {run_date} --stages labeled,samples` first")
    batch = table.combine_chunks().to_batches()[0]
    return task_batch(batch, len(inputs.meta_columns), len(inputs.context_columns), with_split=True)


def run(spark: SparkSession, cfg: Config, run_date: dt.date, inputs: Inputs, progress=print,
        max_tasks: int | None = None) -> dict:
    from models.blocks import ModelSpec
    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.choice import choose, split
    from models.onnx_export import mean_embedding
    from models.train import train

    with lake.Timer() as t:
        data = load_tasks(spark, cfg, run_date, inputs, max_tasks)
        spec = ModelSpec.from_config(cfg.model, len(inputs.meta_columns), len(inputs.context_columns))
        # 10% of tasks (by hash order, so deterministic) held out: validation figures, and the
        # fine-tune the model is served with, chosen on them (models.choice).
        n = len(data.lengths)
        hold = np.zeros(n, dtype=bool)
        hold[:: 10] = n >= 20
        take = lambda m: type(data)(**{k: (v[m] if v is not None else None) for k, v in vars(data).items()})  # noqa: E731
        init = None
        if cfg.train.warm_start:
            init = load_checkpoint(cfg.location(cfg.train.warm_start), expect=spec)
        ckpt = train(spec, cfg.train, take(~hold), valid=take(hold) if hold.any() else None, init=init,
                     meta_columns=list(inputs.meta_columns), context_columns=list(inputs.context_columns),
                     progress=progress)
        if hold.any():
            choice = choose(ckpt.params, spec, *split(take(hold)), stats=ckpt.input_stats, lr_scale=ckpt.lr_scale)
            ckpt.finetune_choice = choice.to_dict()
            progress(f"[{cfg.train.mode}] fine-tune chosen on {int(hold.sum())} validation tasks: {choice.describe()}")
        path = save_checkpoint(ckpt, cfg.location(cfg.model.checkpoint_dir))
        artifact = export_artifact(ckpt, cfg.location(cfg.model.checkpoint_dir), mean_embedding(ckpt, data),
                                   f"mean meta-trained embedding (k = 0, latest sample) of the {n} training tasks")
    lake.log_stage(cfg, STAGE, {run_date: n}, t.seconds, f"model={ckpt.version}")
    return {"stage": STAGE, "tasks": n, "seconds": t.seconds, "model_version": ckpt.version,
            "checkpoint": str(path), "artifact": str(artifact), "metrics": ckpt.metrics}


def export_artifact(ckpt, checkpoint_dir, default=None, default_rule: str = "") -> Location:
    """<checkpoint_dir>/<version>.onnx for this checkpoint (replaced if present); its path.
    default / default_rule: the default embedding and how it was made (None: the meta block
    at the training mean features, models.onnx_export.MEAN_FEATURES_RULE)."""
    from models.onnx_export import build_artifact

    data = build_artifact(ckpt, artifact_contract, default, default_rule)
    path = artifact_contract.artifact_path(checkpoint_dir, ckpt.version)
    artifact_contract.write_artifact_bytes(path, data)
    return path
