"""The fine-tune a model is served with: (steps, lr) per support-size bucket, chosen on
validation tasks after training, stored in the checkpoint, and applied the same way by the
daily embed stage and by the evaluation.

The buckets are the paper's Table 3 slices by the samples a task is fine-tuned on (< 25, >= 25);
the grid offers k = 0 (the meta-trained embedding), so validation may leave a bucket un-tuned.
A choice is made by the query AUC, pooled over the bucket's validation tasks, of each grid
point: every task fine-tuned on its support samples, its embedding the fine-tuned meta block on
its most recent support sample, the query scored by the frozen global block with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import blocks
from .blocks import ModelSpec
from .data import NonFiniteEmbeddingError, TaskBatch, prepare
from .finetune import adapt, embed, finetune_embed, step_sizes
from .metrics import auc

GRID = ((0, 0.0), (1, 0.1), (1, 0.3), (3, 0.3), (3, 1.0))
SHORT = 25  # support samples: tasks below are the "lt25" bucket, the others "ge25"
BUCKETS = ("lt25", "ge25")
# What a checkpoint without a choice is fine-tuned with (the daily job's fixed values before).
FALLBACK = (3, 0.5)


def bucket_of(n_samples) -> np.ndarray:
    """The bucket index (into BUCKETS) of each task by the samples it is fine-tuned on."""
    return (np.asarray(n_samples) >= SHORT).astype(np.int64)


@dataclass(frozen=True)
class FinetuneChoice:
    steps: tuple[int, ...]  # per bucket (BUCKETS order)
    lr: tuple[float, ...]
    validation: dict = field(default_factory=dict, compare=False)  # {bucket: {"k,lr": auc}, "tasks": {...}}

    def of(self, bucket: int) -> tuple[int, float]:
        return int(self.steps[bucket]), float(self.lr[bucket])

    def to_dict(self) -> dict:
        return {"buckets": list(BUCKETS), "short": SHORT, "steps": list(self.steps), "lr": list(self.lr),
                "validation": self.validation}

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneChoice":
        return cls(tuple(int(s) for s in d["steps"]), tuple(float(x) for x in d["lr"]), d.get("validation", {}))

    def describe(self) -> str:
        return "; ".join(f"{b}: k={s}, lr={lr:g}" for b, s, lr in zip(BUCKETS, self.steps, self.lr))


def resolve(ckpt, steps: int | None = None, lr: float | None = None) -> FinetuneChoice:
    """The fine-tune to serve with: the checkpoint's choice (FALLBACK without one), with an
    explicit steps and/or lr overriding it in every bucket."""
    chosen = getattr(ckpt, "finetune_choice", None)
    base = FinetuneChoice.from_dict(chosen) if chosen else FinetuneChoice((FALLBACK[0],) * 2, (FALLBACK[1],) * 2)
    n = len(BUCKETS)
    return FinetuneChoice(base.steps if steps is None else (int(steps),) * n,
                          base.lr if lr is None else (float(lr),) * n, base.validation)


def split(batch: TaskBatch) -> tuple[TaskBatch, TaskBatch, np.ndarray]:
    """(support, query, n_support) of a batch whose first n_support samples per task are
    support (training's held-out tasks): two batches of the same tasks."""
    ns = np.asarray(batch.n_support, np.int64)
    lengths = np.asarray(batch.lengths, np.int64)
    nq = np.maximum(lengths - ns, 0)
    B = len(lengths)
    parts = {}
    for name, lo, width in (("support", np.zeros(B, np.int64), ns), ("query", ns, nq)):
        L = int(max(1, width.max(initial=1)))
        cols = np.arange(L)[None, :]
        src = np.minimum(lo[:, None] + cols, max(0, np.asarray(batch.labels).shape[1] - 1))
        take = {k: np.take_along_axis(np.asarray(getattr(batch, k)), src if np.asarray(getattr(batch, k)).ndim == 2
                                      else src[:, :, None], axis=1) for k in ("x_meta", "x_other", "item_ids", "labels")}
        # a task with no support keeps one stand-in sample (query_logits gives it no gradient);
        # a query's length is what it has (0: nothing scored)
        lengths_ = np.maximum(width, 1) if name == "support" else width
        parts[name] = TaskBatch(lengths=lengths_, task_ids=np.asarray(batch.task_ids), **take)
    return parts["support"], parts["query"], ns


def _adapted(params: dict, spec: ModelSpec, support: TaskBatch, n_support, steps: int, lr: float, which: str,
             stats: dict | None, lr_scale: dict | None, chunk: int):
    """Per chunk of tasks: (slice, the fine-tuned params, the embeddings [chunk, E]) after `steps`
    steps (lr, times the Meta-SGD lr_scale) of `which` on each task's support samples. A task with
    n_support = 0 holds one stand-in sample that takes no gradient."""
    S = prepare(support, spec, stats=stats)
    S.mask = S.mask * torch.as_tensor(np.asarray(n_support) > 0, dtype=torch.float32).unsqueeze(1)
    for s in range(0, S.lengths.shape[0], chunk):
        sl = slice(s, s + chunk)
        ss = S.rows(sl)
        p = adapt(params, spec, ss, ss.mask, steps, step_sizes(lr, lr_scale), which=which)
        with torch.no_grad():
            yield sl, p, embed(p, spec, ss, "latest")  # the published embedding


def finetuned_embeddings(params: dict, spec: ModelSpec, support: TaskBatch, n_support, steps: int, lr: float,
                         which: str = "meta", stats: dict | None = None, lr_scale: dict | None = None,
                         chunk: int = 128) -> np.ndarray:
    """[T, embedding_dim]: each task's embedding after the fine-tune, as the evaluation scores it."""
    parts = [e.numpy() for _, _, e in _adapted(params, spec, support, n_support, steps, lr, which, stats, lr_scale,
                                                chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, spec.embedding_dim), np.float32)


def query_logits(params: dict, spec: ModelSpec, support: TaskBatch, query: TaskBatch, n_support, steps: int,
                 lr: float, which: str = "meta", stats: dict | None = None, lr_scale: dict | None = None,
                 chunk: int = 128) -> np.ndarray:
    """Query logits [T, Lq] after the fine-tune ("meta": LiMAML's meta block; "all": the whole
    network): the frozen (or adapted) global block with each task's fine-tuned embedding."""
    Q = prepare(query, spec, check=False, stats=stats)
    out = np.zeros(Q.labels.shape, np.float32)
    for sl, p, e in _adapted(params, spec, support, n_support, steps, lr, which, stats, lr_scale, chunk):
        qq = Q.rows(sl)
        with torch.no_grad():
            pre = blocks.global_pre(p, qq.x_other, qq.item_ids, spec)
            lg = blocks.global_from_pre(p, pre, e.unsqueeze(1).expand(-1, qq.labels.shape[1], -1), spec)
        out[sl] = lg.numpy()
    return out


def bucket_aucs(query: TaskBatch, logits: np.ndarray, n_support) -> dict[str, tuple[float, int]]:
    """{bucket: (AUC pooled over its tasks' query samples, tasks)}."""
    valid = np.arange(query.labels.shape[1])[None, :] < np.asarray(query.lengths)[:, None]
    which = bucket_of(n_support)
    out = {}
    for b, name in enumerate(BUCKETS):
        m = valid & (which == b)[:, None]
        out[name] = (auc(np.asarray(query.labels)[m], logits[m]) if m.any() else float("nan"), int((which == b).sum()))
    return out


def choose(params: dict, spec: ModelSpec, support: TaskBatch, query: TaskBatch, n_support, *, which: str = "meta",
           stats: dict | None = None, lr_scale: dict | None = None, grid=GRID) -> FinetuneChoice:
    """Per bucket, the grid point of the highest validation AUC (the first of equals)."""
    scores = {g: bucket_aucs(query, query_logits(params, spec, support, query, n_support, g[0], g[1], which, stats,
                                                 lr_scale), n_support) for g in grid}
    best = [max(grid, key=lambda g: np.nan_to_num(scores[g][b][0], nan=-1.0)) for b in BUCKETS]
    validation = {b: {f"{g[0]},{g[1]:g}": round(float(scores[g][b][0]), 6) for g in grid} for b in BUCKETS}
    validation["tasks"] = {b: scores[grid[0]][b][1] for b in BUCKETS}
    return FinetuneChoice(tuple(g[0] for g in best), tuple(float(g[1]) for g in best), validation)


def finetune_chosen(ckpt, batch: TaskBatch, choice: FinetuneChoice, **kwargs) -> np.ndarray:
    """finetune_embed with each task's bucket's (steps, lr), by the samples it is fine-tuned on
    (its `lengths`): [B, embedding_dim] in the batch's order."""
    buckets = bucket_of(batch.lengths)
    out = None
    for b in range(len(BUCKETS)):
        idx = np.flatnonzero(buckets == b)
        if not len(idx):
            continue
        steps, lr = choice.of(b)
        try:
            emb = finetune_embed(ckpt, batch.select(idx), steps=steps, lr=lr, **kwargs)
        except NonFiniteEmbeddingError as e:  # its indices are the bucket's: name the batch's
            raise NonFiniteEmbeddingError(idx[e.task_indices].tolist(), str(e)) from e
        if out is None:
            out = np.empty((len(buckets), emb.shape[1]), np.float32)
        out[idx] = emb
    return out
