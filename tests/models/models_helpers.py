"""Small synthetic task batches with a planted per-task preference."""

from __future__ import annotations

import numpy as np

from models.blocks import ModelSpec

from models.data import TaskBatch

SMALL = dict(meta_hidden=16, embedding_dim=8, global_hidden=(32, 16), item_buckets=50, item_dim=4, id_buckets=1000)


def random_batch(B=23, L=10, meta_in=5, other_in=3, seed=0, min_len=1) -> TaskBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, L + 1, B)
    return TaskBatch(
        x_meta=rng.normal(size=(B, L, meta_in)).astype("float32"),
        x_other=rng.normal(size=(B, L, other_in)).astype("float32"),
        item_ids=rng.integers(-(2**40), 2**40, (B, L)),
        labels=(rng.random((B, L)) < 0.5).astype("float32"),
        lengths=lengths,
        task_ids=rng.integers(0, 2**40, B),
        n_support=np.maximum(1, (lengths * 0.75).astype(int)),
    )


def planted(B=256, L=16, meta_in=4, other_in=3, seed=0, noise=0.1, shared=0.0, meta_const=False) -> TaskBatch:
    """Task i likes items whose first feature has sign s_i (hidden, random per task).
    The meta features carry no information about s_i: only the task's own labels
    reveal it, so only adaptation (fine-tune / inner loop) can pick it up.
    `shared` adds an effect of the second item feature common to all tasks,
    which plain (vanilla) training can learn. `meta_const`: the meta features are the
    task entity's (constant over its samples, as user features are), not per-sample noise."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=B)
    x_other = rng.normal(size=(B, L, other_in)).astype("float32")
    logit = 4.0 * sign[:, None] * x_other[:, :, 0] + shared * x_other[:, :, 1]
    flip = rng.random((B, L)) < noise
    labels = ((logit > 0) ^ flip).astype("float32")
    x_meta = rng.normal(size=(B, L, meta_in)).astype("float32") * 0.1 + 1.0
    if meta_const:
        x_meta = np.repeat(x_meta[:, :1], L, axis=1)
    return TaskBatch(
        x_meta=x_meta,
        x_other=x_other,
        item_ids=rng.integers(0, 1000, (B, L)),
        labels=labels,
        lengths=np.full(B, L),
        task_ids=np.arange(B) + seed * 100000,
        n_support=np.full(B, int(L * 0.75)),
    )


def small_spec(meta_block="mlp", meta_in=5, other_in=3, **kw) -> ModelSpec:
    return ModelSpec(meta_in=meta_in, other_in=other_in, meta_block=meta_block, **{**SMALL, **kw})
