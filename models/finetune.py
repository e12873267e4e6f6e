"""Algorithm 2b: per-task fine-tune of the meta block, then the task's meta embedding.

The daily hot path (millions of tasks). Instead of one task at a time (the usual
MAML code, kept as the reference in metaemb/reference_finetune.py), a chunk of B
tasks is one batched problem, and padding is masked out of the loss. Tasks are
independent, so the gradient of the *sum* of per-task losses w.r.t. per-task
parameters is exactly each task's own gradient: the result equals the loop (tested to 1e-5).

Two ways to run the inner loop: models.kernel (the default for the meta block: a
hand-written backward, the chunk's samples in shared GEMMs and a per-task Gram
matrix instead of a per-task first-layer weight), and autograd over per-task
parameter copies with batched matmuls (adapt_autograd: which="all", and the
reference the kernel is tested against). Both compute the part of the frozen global
block's first layer fed by x_other / item ids once per chunk, not once per step;
tasks are sorted by length before chunking so padding stays small.
"""

from __future__ import annotations

import numpy as np
import torch

from . import blocks, kernel
from .blocks import ModelSpec
from .data import NonFiniteEmbeddingError, TaskBatch, Tensors, _where, prepare

POOLINGS = ("latest", "mean", "max", "cosine")
# Tasks per chunk on CPU, from `metaemb bench finetune` sweeps of the kernel on the 2-core dev
# box (reference task): 16-128 within ~5% of each other, 256 ~10% slower; 32 keeps a step's
# [32·chunk, 256] activations in L2. On GPU, bigger is better until memory runs out.
CPU_CHUNK = 32
CUDA_CHUNK = 65536


def resolve_device(device: str) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def auto_chunk(device: str) -> int:
    return CUDA_CHUNK if str(device).startswith("cuda") else CPU_CHUNK


# ---------------------------------------------------------------------------
# batched adaptation (shared by fine-tune, training and evaluation)

def expand_per_task(p: dict, names: list[str], B: int, track: bool) -> dict:
    """Give the named params a leading task dim (a view: no copy until updated).
    track=False detaches from the shared params (fine-tune); True keeps the
    graph so the outer update sees through the inner loop (training)."""
    out = dict(p)
    for k in names:
        v = p[k] if k == "meta.id_row" else p[k].unsqueeze(0).expand(B, *p[k].shape)  # id_row: already per task
        out[k] = v if track else v.detach().requires_grad_(True)
    return out


def step_sizes(lr: float, lr_scale: dict | None, device=None):
    """The inner-loop step size: the scalar lr, or with meta-learned per-parameter multipliers
    (Meta-SGD, Checkpoint.lr_scale) the dict {name: lr · multiplier}."""
    if lr_scale is None:
        return float(lr)
    return {k: float(lr) * v.to(device) for k, v in lr_scale.items()}


def adapt(params: dict, spec: ModelSpec, t: Tensors, mask: torch.Tensor, steps: int, lr,
          which: str = "meta", track: bool = False, first_order: bool = False,
          use_kernel: bool | None = None) -> dict:
    """`steps` SGD steps (lr) of each task's own copy of the `which` params ("meta" or
    "all") on its masked mean BCE. Returns the task-view params, adapted ones
    with a leading task dimension.

    track=False: inference (fine-tune), nothing kept for an outer gradient.
    track=True: training; the result stays a function of the shared params, so the
    outer loss differentiates through the inner loop (second-order), or only
    through the final `θ - α·g` with g treated as a constant (first_order).

    use_kernel (None: whenever it applies): the hand-written inner loop of models.kernel,
    which covers which="meta"; which="all" (maml) adapts the global block too and takes
    the autograd path.

    lr: a float, or per-parameter step sizes {name: tensor} (Meta-SGD, see step_sizes; the
    names of blocks.lr_shapes, and only for which="meta").
    """
    if isinstance(lr, dict) and which != "meta":
        raise ValueError("per-parameter learning rates adapt the meta block only (which='meta')")
    if use_kernel is None:
        use_kernel = which == "meta"
    if use_kernel:
        return adapt_kernel(params, spec, t, mask, steps, lr, track=track, first_order=first_order)
    return adapt_autograd(params, spec, t, mask, steps, lr, which, track, first_order)


def adapt_kernel(params: dict, spec: ModelSpec, t: Tensors, mask: torch.Tensor, steps: int, lr,
                 track: bool = False, first_order: bool = False) -> dict:
    """adapt(which="meta") through models.kernel."""
    p = blocks.task_view(params, spec, t.task_ids)
    with torch.set_grad_enabled(track and not first_order):
        pre = blocks.global_pre(p, t.x_other, t.item_ids, spec)
        s = kernel.adapt_state(p, spec, t.x_meta, pre, t.labels, mask, steps, lr, explicit=True)
        q = kernel.adapted_params(p, s, t.x_meta)
    if track and first_order:  # θ − Δ with the update Δ a constant: the outer gradient sees θ only
        for k in q:
            if k.startswith("meta."):
                d = (p[k] - q[k]).detach()
                if isinstance(lr, dict) and lr[k].requires_grad:
                    # learned lrs A (> 0): Δ = A ⊙ Σ_t g_t, so θ − A ⊙ (Δ / A) with Σ_t g_t a constant,
                    # the first-order gradient autograd's path gives A as well
                    a = lr[k]
                    d = a * (d / a.detach().clamp_min(1e-30))
                q[k] = p[k] - d
    elif not track:
        q = {k: (v.detach() if k.startswith("meta.") else v) for k, v in q.items()}
    return q


def adapt_autograd(params: dict, spec: ModelSpec, t: Tensors, mask: torch.Tensor, steps: int, lr,
                   which: str = "meta", track: bool = False, first_order: bool = False) -> dict:
    """adapt() with autograd's backward and per-task copies of the adapted params (bmm)."""
    B = t.lengths.shape[0]
    p = blocks.task_view(params, spec, t.task_ids)
    names = [k for k in p if which == "all" or k.startswith("meta.")]
    p = expand_per_task(p, names, B, track=track)
    pre = None
    if not any(k.startswith("global.") for k in names):
        # frozen global block: its e-independent part is the same at every step
        with torch.set_grad_enabled(track):
            pre = blocks.global_pre(p, t.x_other, t.item_ids, spec)
    second_order = track and not first_order
    for _ in range(steps):
        with torch.enable_grad():
            e = blocks.meta_forward(p, t.x_meta, spec)
            pre_s = pre if pre is not None else blocks.global_pre(p, t.x_other, t.item_ids, spec)
            logit = blocks.global_from_pre(p, pre_s, e, spec)
            loss = blocks.masked_task_loss(logit, t.labels, mask).sum()
            grads = torch.autograd.grad(loss, [p[k] for k in names], create_graph=second_order,
                                        retain_graph=track)
        for k, g in zip(names, grads):
            a = lr[k] if isinstance(lr, dict) else lr
            if track:
                p[k] = p[k] - a * (g if second_order else g.detach())
            else:
                p[k] = (p[k] - a * g).detach().requires_grad_(True)
    return p


def latest_rows(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x[b, lengths[b]-1] for every task: [B, 1, F] (the most recent sample)."""
    idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return torch.gather(x, 1, idx)


def embed(p: dict, spec: ModelSpec, t: Tensors, pooling: str = "latest") -> torch.Tensor:
    """Meta embedding [B, E] from (fine-tuned) task-view params."""
    last = blocks.meta_forward(p, latest_rows(t.x_meta, t.lengths), spec)  # [B, 1, E]
    e = None if pooling == "latest" else blocks.meta_forward(p, t.x_meta, spec)  # [B, L, E]
    return pool(e, last, t, pooling)


def embed_state(s: dict, t: Tensors, pooling: str = "latest") -> torch.Tensor:
    """Meta embedding [B, E] from an adapted models.kernel state."""
    if pooling == "latest":
        return pool(None, kernel.rows_embedding(s, (t.lengths - 1).clamp_min(0).unsqueeze(1), t.labels.shape[1]), t, pooling)
    e = kernel.rows_embedding(s, None, t.labels.shape[1])
    return pool(e, latest_rows(e, t.lengths), t, pooling)


def pool(e: torch.Tensor | None, last: torch.Tensor, t: Tensors, pooling: str) -> torch.Tensor:
    """One embedding per task [B, E] from every sample's e [B, L, E] and the latest's [B, 1, E]."""
    if pooling == "latest":
        return last.squeeze(1)
    m = t.mask.unsqueeze(-1)
    if pooling == "mean":
        return (e * m).sum(1) / m.sum(1).clamp_min(1.0)
    if pooling == "max":
        return e.masked_fill(m == 0, float("-inf")).amax(1)
    if pooling == "cosine":  # weights = cosine(sample, latest sample), negatives dropped
        w = torch.nn.functional.cosine_similarity(e, last, dim=-1).clamp_min(0) * t.mask
        w = torch.where(w.sum(1, keepdim=True) > 0, w, (t.mask * 0).scatter(1, (t.lengths - 1).view(-1, 1), 1.0))
        return (e * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


# ---------------------------------------------------------------------------
# the public entry point

def check_finetune_args(steps, lr, pooling):
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not np.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr}")


def finetune_embed(ckpt, batch: TaskBatch, *, steps: int, lr: float, pooling: str = "latest",
                   device: str = "cpu", chunk_size: int | None = None, min_samples: int = 0,
                   use_kernel: bool = True) -> np.ndarray:
    """Alg 2b for every task of `batch`: [B, embedding_dim] float32 embeddings.

    k = `steps` SGD steps (lr) of the meta params only, global frozen, on all of
    each task's `lengths` samples; then the fine-tuned meta block on the most
    recent sample (or the chosen pooling). A checkpoint with meta-learned per-parameter
    step sizes (Meta-SGD, ckpt.lr_scale) takes lr · lr_scale per parameter, so lr =
    the training's task_lr repeats the meta-trained step. Tasks with fewer than `min_samples`
    samples are not fine-tuned (k = 0): on short histories a few SGD steps can
    fit noise (validation on ML-100k turned fine-tuning off below 25 samples).
    Raises ValueError on bad input and NonFiniteEmbeddingError (naming task
    indices) if any embedding is NaN/inf. use_kernel=False: the autograd path (per-task
    weight copies, bmm), which the kernel is tested against.
    """
    check_finetune_args(steps, lr, pooling)
    spec = ckpt.spec
    device = resolve_device(device)
    t = prepare(batch, spec, device, stats=getattr(ckpt, "input_stats", None))
    params = {k: v.to(device) for k, v in ckpt.params.items()}
    lrs = step_sizes(lr, getattr(ckpt, "lr_scale", None), device)
    B = t.lengths.shape[0]
    out = torch.empty(B, spec.embedding_dim, device=device)
    cs = int(chunk_size or auto_chunk(device))
    order = torch.argsort(t.lengths, stable=True)  # similar lengths share a chunk: little padding
    n_short = int((t.lengths < int(min_samples)).sum())  # the first n_short of `order`
    with torch.no_grad():
        for ids, k in ((order[:n_short], 0), (order[n_short:], int(steps))):
            for s in range(0, len(ids), cs):
                idx = ids[s:s + cs]
                L = int(t.lengths[idx].max())
                sub = Tensors(t.x_meta[idx, :L], t.x_other[idx, :L], t.item_ids[idx, :L], t.labels[idx, :L],
                              t.lengths[idx], t.task_ids[idx], t.mask[idx, :L], None)
                if use_kernel:
                    p = blocks.task_view(params, spec, sub.task_ids)
                    pre = blocks.global_pre(p, sub.x_other, sub.item_ids, spec)
                    st = kernel.adapt_state(p, spec, sub.x_meta, pre, sub.labels, sub.mask, k, lrs)
                    out[idx] = embed_state(st, sub, pooling)
                else:
                    p = adapt_autograd(params, spec, sub, sub.mask, k, lrs, which="meta")
                    out[idx] = embed(p, spec, sub, pooling)
    emb = out.float().cpu()
    bad = ~torch.isfinite(emb).all(1)
    if bad.any():
        raise NonFiniteEmbeddingError(
            torch.nonzero(bad).flatten().tolist(),
            f"fine-tune produced NaN/inf embeddings for {_where(bad, t.task_ids.cpu())}; "
            f"steps={steps}, lr={lr} — the batch is not usable (lower the fine-tune lr?)")
    return emb.numpy()
