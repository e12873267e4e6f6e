"""Algorithm 2a: meta-training over batches of tasks (LiMAML / MAML / vanilla).

limaml:  inner loop adapts a per-task copy of θ_meta on the support set (n SGD
         steps, lr α); the query loss of the adapted model updates θ_meta (through
         the inner loop: second-order by default) and θ_global.
maml:    the same, but the whole network is adapted in the inner loop.
vanilla: the same task batching, no inner loop; the loss is on all samples.
meta_sgd (limaml): Meta-SGD (Li et al. 2017), the inner loop's step size per meta-block
         parameter element is task_lr · exp(ρ), ρ meta-learned by the outer step along with
         θ (its own Adam lr, meta_sgd_lr); the checkpoint keeps exp(ρ) as lr_scale.
A warm start (`init`, e.g. limaml from a vanilla checkpoint) just begins from
those parameters. Outer optimizer: torch.optim.Adam, lr = β · tasks_per_batch / 128
(the paper's linear scaling), linear warm-up then cosine decay (torch's LinearLR then
CosineAnnealingLR), global grad-norm clip (clip_grad_norm_).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch

from . import blocks
from .blocks import ModelSpec
from .checkpoint import Checkpoint
from .data import TaskBatch, Tensors, apply_stats, compute_stats, prepare
from .finetune import adapt
from .metrics import auc

MODES = ("limaml", "maml", "vanilla")


def _cfg_dict(train_cfg) -> dict:
    if dataclasses.is_dataclass(train_cfg):
        return dataclasses.asdict(train_cfg)
    return dict(train_cfg)


def _trim(t: Tensors, idx: torch.Tensor) -> Tensors:
    """Rows idx, cut to their longest task (less padding = less work)."""
    L = int(t.lengths[idx].max())
    return Tensors(t.x_meta[idx, :L], t.x_other[idx, :L], t.item_ids[idx, :L], t.labels[idx, :L],
                   t.lengths[idx], t.task_ids[idx], t.mask[idx, :L], t.n_support[idx])


def split_masks(t: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(support, query) float masks: the first n_support valid samples are support."""
    pos = torch.arange(t.mask.shape[1], device=t.mask.device).unsqueeze(0)
    sup = (pos < t.n_support.unsqueeze(1)).float() * t.mask
    return sup, t.mask - sup


def task_losses(params: dict, spec: ModelSpec, t: Tensors, c: dict, track: bool,
                log_lr: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-task loss the outer step minimizes, plus (query logits, query mask). log_lr: the
    Meta-SGD log-multipliers ρ of the inner step (None: the scalar task_lr)."""
    mode = c["mode"]
    if mode == "vanilla":
        p = blocks.task_view(params, spec, t.task_ids)
        lg = blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec)
        return blocks.masked_task_loss(lg, t.labels, t.mask), lg, t.mask
    sup, qry = split_masks(t)
    lr = float(c["task_lr"])
    if log_lr is not None:
        with torch.set_grad_enabled(track):
            lr = {k: lr * torch.exp(v) for k, v in log_lr.items()}
    # the inner loop sees support rows only: the rows past the longest support are all query
    # (weight 0 there), so it runs on the first max(n_support) rows, with the same result
    ls = max(1, int(t.n_support.max()))
    ts = Tensors(t.x_meta[:, :ls], t.x_other[:, :ls], t.item_ids[:, :ls], t.labels[:, :ls], t.lengths.clamp(max=ls),
                 t.task_ids, t.mask[:, :ls], t.n_support)
    p = adapt(params, spec, ts, sup[:, :ls], int(c["inner_steps"]), lr,
              which="meta" if mode == "limaml" else "all", track=track, first_order=bool(c["first_order"]))
    with torch.set_grad_enabled(track):
        lg = blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec)
        return blocks.masked_task_loss(lg, t.labels, qry), lg, qry


def evaluate_batch(params: dict, spec: ModelSpec, t: Tensors, c: dict, chunk: int = 1024,
                   log_lr: dict | None = None) -> dict:
    """Query loss and AUC (pooled over samples) the way the mode infers."""
    losses, ys, ss = [], [], []
    for s in range(0, t.lengths.shape[0], chunk):
        sub = _trim(t, torch.arange(s, min(s + chunk, t.lengths.shape[0]), device=t.lengths.device))
        with torch.no_grad():
            per_task, lg, m = task_losses(params, spec, sub, c, track=False, log_lr=log_lr)
        keep = m.sum(1) > 0
        losses.append(per_task[keep])
        sel = m > 0
        ys.append(sub.labels[sel].cpu().numpy())
        ss.append(lg.detach()[sel].cpu().numpy())
    y, sc = np.concatenate(ys), np.concatenate(ss)
    return {"loss": float(torch.cat(losses).mean()), "auc": auc(y, sc), "n_tasks": int(sum(len(x) for x in losses))}


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.05):
    """Linear warm-up to the peak lr over `warmup` steps, then cosine decay to
    `floor` x peak at the last step; step the scheduler after each optimizer step."""
    peak = opt.param_groups[0]["lr"]
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=floor * peak)
    if warmup == 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warmup])


def train(spec: ModelSpec, train_cfg, data: TaskBatch, *, valid: TaskBatch | None = None,
          init: Checkpoint | None = None, meta_columns=(), context_columns=(),
          progress: Callable[[str], None] | None = None, device: str = "cpu") -> Checkpoint:
    """Train θ_meta and θ_global on `data` (n_support must be set). With `valid`, the
    epoch with the best validation AUC is kept (hyper-parameters/epochs chosen on
    validation, never on test)."""
    c = _cfg_dict(train_cfg)
    mode = c["mode"]
    if mode not in MODES:
        raise ValueError(f"train mode must be one of {MODES}, got {mode!r}")
    if data.n_support is None:
        raise ValueError("train() needs data.n_support (support/query split per task)")
    say = progress or (lambda line: None)
    t = prepare(data, spec, device)
    # Input standardization: per-column mean/std over the valid training samples (a
    # warm start keeps its checkpoint's statistics, which its parameters were fit to).
    if init is not None and init.input_stats is not None:
        stats = init.input_stats
    else:
        stats = compute_stats(t)
    t = apply_stats(t, stats)
    if mode != "vanilla":  # a task needs both a support and a query sample to teach adaptation
        ok = (t.n_support >= 1) & (t.n_support < t.lengths)
        if not ok.any():
            raise ValueError("no task has both support and query samples (need 1 <= n_support < length)")
        t = t.rows(ok)
    tv = None
    if valid is not None:
        if valid.n_support is None:
            raise ValueError("valid needs n_support: support = fine-tune samples, query = evaluated samples")
        tv = prepare(valid, spec, device, stats=stats)
        tv = tv.rows((tv.n_support < tv.lengths) & ((tv.n_support >= 1) | (mode == "vanilla")))

    if init is not None:
        if init.spec != spec:
            raise ValueError(f"warm-start checkpoint {init.version} has spec {init.spec}, training spec is {spec}")
        start = init.params
    else:
        start = blocks.init_params(spec, seed=int(c.get("seed", 0)))
    params = {k: v.detach().clone().to(device).requires_grad_(True) for k, v in start.items()}
    log_lr = None
    if c.get("meta_sgd", False) and mode == "limaml":  # the meta block's step sizes: LiMAML's inner loop
        init_scale = init.lr_scale if init is not None and init.lr_scale is not None else None
        log_lr = {k: (torch.log(init_scale[k].clamp_min(1e-12)) if init_scale is not None else torch.zeros(shape))
                  .to(device).requires_grad_(True) for k, shape in blocks.lr_shapes(spec).items()}

    T = t.lengths.shape[0]
    tpb = int(c["tasks_per_batch"])
    steps_per_epoch = max(1, math.ceil(T / tpb))
    total = steps_per_epoch * int(c["epochs"])
    warmup = min(int(c["warmup_steps"]), max(1, total // 5))
    peak_lr = float(c["meta_lr"]) * tpb / 128.0
    # The first optimizer built in a process imports torch._dynamo (+5-7 s on a 2-core box
    # by `python -X importtime`; `import torch.optim` itself is free, torch loads it); only
    # training processes build one, so fine-tune, publish and the CLI never pay it.
    groups = [{"params": list(params.values()), "lr": peak_lr}]
    if log_lr is not None:
        groups.append({"params": list(log_lr.values()), "lr": float(c["meta_sgd_lr"]) * tpb / 128.0})
    opt = torch.optim.Adam(groups, lr=peak_lr)
    schedule = warmup_cosine(opt, warmup, total)
    gen = torch.Generator().manual_seed(int(c.get("seed", 0)))
    metrics: dict = {"train_loss": [], "valid": [], "n_train_tasks": T, "peak_lr": peak_lr}
    best = (-1.0, None, -1, None)
    t0, step = time.time(), 0
    for epoch in range(int(c["epochs"])):
        perm = torch.randperm(T, generator=gen).to(device)
        run_loss = 0.0
        for b in range(steps_per_epoch):
            sub = _trim(t, perm[b * tpb:(b + 1) * tpb])
            per_task, _, _ = task_losses(params, spec, sub, c, track=True, log_lr=log_lr)
            loss = per_task.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch} step {step}; "
                                         f"lower meta_lr ({c['meta_lr']}) or task_lr ({c['task_lr']})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params.values(), float(c["grad_clip"]))
            if log_lr is not None:  # clipped on their own: their gradient scale is not θ's
                torch.nn.utils.clip_grad_norm_(log_lr.values(), float(c["grad_clip"]))
            opt.step()
            schedule.step()
            run_loss += loss.item()
            step += 1
        metrics["train_loss"].append(run_loss / steps_per_epoch)
        line = f"[{mode}] epoch {epoch + 1}/{c['epochs']} step {step}/{total} train_loss {run_loss / steps_per_epoch:.4f}"
        if tv is not None and tv.lengths.shape[0] > 0:
            v = evaluate_batch(params, spec, tv, c, log_lr=log_lr)
            metrics["valid"].append(v)
            line += f" valid_loss {v['loss']:.4f} valid_auc {v['auc']:.4f}"
            if v["auc"] > best[0] or best[1] is None:
                best = (v["auc"], {k: p.detach().clone() for k, p in params.items()}, epoch + 1, _scales(log_lr))
        say(line + f" ({time.time() - t0:.1f}s)")
    final = best[1] if best[1] is not None else {k: p.detach().clone() for k, p in params.items()}
    lr_scale = best[3] if best[1] is not None else _scales(log_lr)
    metrics["best_epoch"] = best[2] if best[1] is not None else int(c["epochs"])
    if lr_scale is not None:  # a summary of the learned step sizes, per parameter
        metrics["lr_scale"] = {k: {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
                               for k, v in lr_scale.items()}
    metrics["train_seconds"] = round(time.time() - t0, 2)
    tc = dict(c)
    if init is not None:
        tc["warm_start_from"] = init.version
    return Checkpoint(spec=spec, params={k: v.cpu() for k, v in final.items()}, mode=mode, train_config=tc,
                      meta_columns=list(meta_columns), context_columns=list(context_columns), metrics=metrics,
                      input_stats=stats, lr_scale=lr_scale)


def _scales(log_lr: dict | None) -> dict | None:
    """The learned lr multipliers exp(ρ), detached on the CPU (None without Meta-SGD)."""
    return None if log_lr is None else {k: torch.exp(v.detach()).cpu() for k, v in log_lr.items()}
