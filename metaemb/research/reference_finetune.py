"""Reference implementations of Algorithm 2b the product does not run.

The daily job fine-tunes with `models.finetune_embed` (batched over tasks). These are
the yardsticks it is tested and benchmarked against (tests/models, `metaemb bench
finetune`), plus the online model's scoring of a published embedding:

  finetune_embed_loop   one task at a time, the way MAML code is usually written
  finetune_embed_vmap   torch.func: grad of a one-task loss, vmapped over tasks
  score                 serving-time logits: the global block with the task's fixed embedding
"""

from __future__ import annotations

import numpy as np
import torch

from models import blocks
from models.blocks import ModelSpec
from models.data import TaskBatch, prepare
from models.finetune import check_finetune_args


def finetune_embed_loop(ckpt, batch: TaskBatch, *, steps: int, lr: float, pooling: str = "latest") -> np.ndarray:
    """One task at a time, learn2learn-style: clone θ_meta, k steps (lr, times the checkpoint's
    Meta-SGD multipliers if it has them), embed. The reference the batched path must equal, and
    the benchmark's baseline."""
    check_finetune_args(steps, lr, pooling)
    spec = ckpt.spec
    t = prepare(batch, spec, "cpu", stats=getattr(ckpt, "input_stats", None))
    scale = getattr(ckpt, "lr_scale", None)  # Meta-SGD: lr times the learned multiplier per parameter
    rows = []
    for i in range(t.lengths.shape[0]):
        n = int(t.lengths[i])
        xm, xo, it, y = t.x_meta[i, :n], t.x_other[i, :n], t.item_ids[i, :n], t.labels[i, :n]
        p = blocks.task_view(ckpt.params, spec, t.task_ids[i])
        names = [k for k in p if k.startswith("meta.")]
        for k in names:
            p[k] = p[k].detach().clone()
        for _ in range(int(steps)):
            for k in names:
                p[k].requires_grad_(True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(blocks.logits(p, xm, xo, it, spec), y)
            grads = torch.autograd.grad(loss, [p[k] for k in names])
            with torch.no_grad():
                for k, g in zip(names, grads):
                    p[k] = p[k] - lr * (scale[k] if scale else 1.0) * g
        with torch.no_grad():
            e = blocks.meta_forward(p, xm, spec)  # [n, E]
            if pooling == "latest":
                v = e[-1]
            elif pooling == "mean":
                v = e.mean(0)
            elif pooling == "max":
                v = e.max(0).values
            else:
                w = torch.nn.functional.cosine_similarity(e, e[-1:], dim=-1).clamp_min(0)
                v = (e * w.unsqueeze(-1)).sum(0) / w.sum()
        rows.append(v.float())
    return torch.stack(rows).numpy()


def finetune_embed_vmap(ckpt, batch: TaskBatch, *, steps: int, lr: float, chunk_size: int = 1024,
                        device: str = "cpu") -> np.ndarray:
    """torch.func variant (functional grad, vmapped over tasks), latest pooling.
    Same math; kept for the benchmark's comparison with the bmm path."""
    from torch.func import grad, vmap

    spec = ckpt.spec
    if spec.meta_block != "mlp":
        raise ValueError("finetune_embed_vmap supports the 'mlp' meta block only")
    t = prepare(batch, spec, device, stats=getattr(ckpt, "input_stats", None))
    params = {k: v.to(device) for k, v in ckpt.params.items()}
    meta, glob = blocks.split(params)

    def one_task(xm, xo, it, y, m, n):
        def loss_fn(pm):
            p = {**glob, **pm}
            lg = blocks.logits(p, xm, xo, it, spec)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(lg, y, reduction="none")
            return (bce * m).sum() / m.sum()
        pm = dict(meta)
        for _ in range(int(steps)):
            g = grad(loss_fn)(pm)
            pm = {k: pm[k] - lr * g[k] for k in pm}
        last = torch.gather(xm, 0, (n - 1).view(1, 1).expand(1, xm.shape[-1]))
        return blocks.meta_forward(pm, last, spec)[0]

    f = vmap(one_task)
    outs = []
    for s in range(0, t.lengths.shape[0], chunk_size):
        sl = slice(s, s + chunk_size)
        outs.append(f(t.x_meta[sl], t.x_other[sl], t.item_ids[sl], t.labels[sl], t.mask[sl], t.lengths[sl]))
    return torch.cat(outs).detach().cpu().numpy()


def score(params: dict, spec: ModelSpec, batch: TaskBatch, embeddings, device: str = "cpu",
          stats: dict | None = None) -> np.ndarray:
    """Serving-time logits [B, L]: the global block on each sample with the task's
    (fixed, published) embedding. Padding positions are garbage; mask them.
    `stats`: the checkpoint's input_stats (the online model must standardize x_other the same way)."""
    t = prepare(batch, spec, device, check=False, stats=stats)
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32, device=device)
    p = {k: v.to(device) for k, v in params.items()}
    with torch.no_grad():
        pre = blocks.global_pre(p, t.x_other, t.item_ids, spec)
        e = e.unsqueeze(1).expand(-1, t.labels.shape[1], -1)
        return blocks.global_from_pre(p, pre, e, spec).cpu().numpy()
