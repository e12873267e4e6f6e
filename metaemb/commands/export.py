"""`metaemb export [--model-version V]`: write a checkpoint's serving artifact (ONNX) beside it."""

from __future__ import annotations

import argparse

CHECK_ROWS = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Writes <checkpoint_dir>/<version>.onnx: the global block with its input standardization, for ONNX Runtime, "
        "plus (in its metadata) the context column order, the item-id hashing, the embedding size, the default "
        "embedding and the model version. Training writes it too; this exports checkpoints trained before, or "
        "again. The default embedding (for tasks with none online) is the mean embedding of the version's first "
        "day in meta_embeddings, else the meta block at the training mean features. Then it checks ONNX Runtime's "
        f"probabilities against the in-process global block on {CHECK_ROWS} random rows.")
    p.add_argument("--model-version", help="the checkpoint to export (default: LATEST in [model] checkpoint_dir)")


def run(args, cfg) -> int:
    from models.checkpoint import load_checkpoint
    from pipelines.train import export_artifact

    folder = cfg.location(cfg.model.checkpoint_dir)
    ckpt = load_checkpoint(folder / f"{args.model_version}.pt" if args.model_version else folder)
    default, rule = first_day_mean(cfg, ckpt.version)
    path = export_artifact(ckpt, folder, default, rule)
    diff = max_difference(ckpt, path)
    print(f"model version {ckpt.version}: serving artifact {path} ({len(path.read_bytes()):,} bytes); default embedding: "
          f"{rule or 'meta block at the training mean features (no embedding of this version in meta_embeddings)'}; "
          f"ONNX Runtime = in-process global block to {diff:.1e} on {CHECK_ROWS} random rows", flush=True)
    return 0 if diff <= 1e-5 else 1


def first_day_mean(cfg, version: str):
    """(mean embedding of the version's first run_date in meta_embeddings, its description), or
    (None, "") when the version has none: the training data is gone, its embeddings are not."""
    import numpy as np
    import pyarrow.compute as pc

    from core import tables
    from pipelines import delta_tables, lake

    if not lake.table_exists(cfg, tables.META_EMBEDDINGS):
        return None, ""
    path = cfg.table_location(tables.META_EMBEDDINGS)
    days = delta_tables.read(path, [tables.RUN_DATE, tables.MODEL_VERSION])
    days = days.filter(pc.equal(days.column(tables.MODEL_VERSION), version)).column(tables.RUN_DATE)
    if len(days) == 0:
        return None, ""
    first = pc.min(days).as_py()
    rows = lake.read_day(cfg, tables.META_EMBEDDINGS, first, [tables.EMBEDDING, tables.MODEL_VERSION])
    rows = rows.filter(pc.equal(rows.column(tables.MODEL_VERSION), version))
    emb = np.stack(rows.column(tables.EMBEDDING).to_numpy(zero_copy_only=False)).astype(np.float32)
    return emb.mean(0), f"mean embedding of its first day in meta_embeddings, {first} ({len(emb):,} tasks)"


def max_difference(ckpt, path) -> float:
    """max |ONNX probability - sigmoid(in-process logit)| on random inputs around the training data."""
    import numpy as np
    import torch

    from core.artifact_contract import item_hash
    from models.onnx_export import global_logits
    from serving.onnx_runtime import load_artifact

    artifact = load_artifact(path, expect_version=ckpt.version)
    rng = np.random.default_rng(0)
    spec = ckpt.spec
    stats = ckpt.input_stats or {"other_mean": torch.zeros(spec.other_in), "other_std": torch.ones(spec.other_in)}
    context = (rng.normal(size=(CHECK_ROWS, spec.other_in)) * stats["other_std"].numpy()
               + stats["other_mean"].numpy()).astype(np.float32)
    items = [int(i) for i in rng.integers(-(2**62), 2**62, CHECK_ROWS)]
    embedding = (artifact.default_embedding + rng.normal(size=(CHECK_ROWS, spec.embedding_dim))).astype(np.float32)
    got = artifact.predict(context, items, embedding)
    want = torch.sigmoid(global_logits(ckpt, torch.from_numpy(context), torch.from_numpy(item_hash(items)),
                                       torch.from_numpy(embedding))).numpy()
    return float(np.abs(got - want).max())
