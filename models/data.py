"""TaskBatch: B tasks padded to a common length L, plus input checks.

Bad input must fail loudly and say where (which task indices), never turn into
a silent NaN embedding downstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .blocks import ModelSpec


class NonFiniteEmbeddingError(RuntimeError):
    """Fine-tuning produced NaN/inf for some tasks; the whole batch must not be published."""

    def __init__(self, task_indices: list[int], message: str):
        super().__init__(message)
        self.task_indices = list(task_indices)


@dataclass
class TaskBatch:
    x_meta: object  # float32 [B, L, meta_in], chronological per task
    x_other: object  # float32 [B, L, other_in]
    item_ids: object  # int64 [B, L], already hashed (any int64)
    labels: object  # float32 [B, L], 0/1
    lengths: object  # int64 [B], >= 1; position length-1 is the most recent sample
    task_ids: object  # int64 [B], hashed task key
    n_support: object | None = None  # int64 [B]: first n_support samples are support

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def select(self, idx) -> "TaskBatch":
        """Subset of tasks (numpy index array / slice), trimmed to its longest task."""
        sub = {k: (None if v is None else v[idx]) for k, v in self.__dict__.items()}
        L = int(max(1, _np(sub["lengths"]).max(initial=1)))
        for k in ("x_meta", "x_other", "item_ids", "labels"):
            sub[k] = sub[k][:, :L]
        return TaskBatch(**sub)


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _t(a, dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def _where(bad: torch.Tensor, task_ids: torch.Tensor | None = None, limit: int = 20) -> str:
    idx = torch.nonzero(bad).flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:limit]) + (", ..." if len(idx) > limit else "")
    s = f"{len(idx)} task(s), indices [{shown}]"
    if task_ids is not None:
        keys = task_ids[bad][:limit].tolist()
        s += f" (task_ids {keys}{' ...' if len(idx) > limit else ''})"
    return s


@dataclass
class Tensors:
    """A checked TaskBatch as tensors on one device; padding zeroed."""

    x_meta: torch.Tensor
    x_other: torch.Tensor
    item_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    task_ids: torch.Tensor
    mask: torch.Tensor  # float [B, L]: 1 on valid samples
    n_support: torch.Tensor | None

    def rows(self, sl) -> "Tensors":
        return Tensors(**{k: (None if v is None else v[sl]) for k, v in self.__dict__.items()})


STD_EPS = 1e-6
STAT_KEYS = ("meta_mean", "meta_std", "other_mean", "other_std")


def compute_stats(t: "Tensors") -> dict[str, torch.Tensor]:
    """Per-column mean / std of x_meta and x_other over the valid (unpadded) samples.
    A (near-)constant column gets std 1, so it maps to ~0 and never to NaN / huge values."""
    m = t.mask.reshape(-1).double()
    n = m.sum().clamp_min(1.0)
    out = {}
    for name, x in (("meta", t.x_meta), ("other", t.x_other)):
        x2 = x.reshape(-1, x.shape[-1]).double()
        mean = (x2 * m[:, None]).sum(0) / n
        var = (((x2 - mean) ** 2) * m[:, None]).sum(0) / n
        std = var.sqrt()
        std = torch.where(std > STD_EPS, std, torch.ones_like(std))
        out[f"{name}_mean"] = mean.float().cpu()
        out[f"{name}_std"] = std.float().cpu()
    return out


def apply_stats(t: "Tensors", stats: dict) -> "Tensors":
    """A prepared (raw) Tensors, standardized with `stats`; padding stays zero."""
    m3 = t.mask.unsqueeze(-1)
    xm = standardize(t.x_meta, stats["meta_mean"], stats["meta_std"]) * m3
    xo = standardize(t.x_other, stats["other_mean"], stats["other_std"]) * m3
    return Tensors(xm.contiguous(), xo.contiguous(), t.item_ids, t.labels, t.lengths, t.task_ids, t.mask, t.n_support)


def check_stats(stats: dict | None, spec: ModelSpec, where: str = "input stats") -> None:
    if stats is None:
        return
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    for k in STAT_KEYS:
        width = spec.meta_in if k.startswith("meta") else spec.other_in
        v = stats[k]
        if tuple(v.shape) != (width,):
            raise ValueError(f"{where}: {k} has shape {tuple(v.shape)}, the spec needs ({width},)")
        if not torch.isfinite(v).all():
            raise ValueError(f"{where}: {k} has NaN/inf values")


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, eps), per column."""
    if x.shape[-1] == 0:
        return x
    return (x - mean.to(x.device)) / std.to(x.device).clamp_min(STD_EPS)


def finite_rows(a: torch.Tensor) -> torch.Tensor:
    """torch.isfinite(a).all(-1), without its [.., F] temporaries (the costliest part of
    prepare: 4 passes and 2 fresh arrays, against one read pass here). NaN/inf propagate
    into a row's sum; a finite row whose sum overflows is rechecked exactly."""
    ok = torch.isfinite(a.sum(-1))
    if not ok.all():
        ok[~ok] = torch.isfinite(a[~ok]).all(-1)
    return ok


def prepare(batch: TaskBatch, spec: ModelSpec, device="cpu", check: bool = True,
            stats: dict | None = None) -> Tensors:
    """Convert + validate; with `stats` (a checkpoint's input_stats), standardize the
    inputs. Raises ValueError naming the offending task indices."""
    x_meta = _t(batch.x_meta, torch.float32, device)
    x_other = _t(batch.x_other, torch.float32, device)
    item_ids = _t(batch.item_ids, torch.int64, device)
    labels = _t(batch.labels, torch.float32, device)
    lengths = _t(batch.lengths, torch.int64, device)
    task_ids = _t(batch.task_ids, torch.int64, device)
    n_support = None if batch.n_support is None else _t(batch.n_support, torch.int64, device)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D [B], got shape {tuple(lengths.shape)}")
    B = lengths.shape[0]
    if x_meta.dim() == 2 and spec.meta_in == 0 and x_meta.shape[1] == labels.shape[-1]:
        x_meta = x_meta.unsqueeze(-1)[..., :0]  # tolerate [B, L] placeholder for "no meta features"
    if x_other.dim() == 2 and spec.other_in == 0 and x_other.shape[1] == labels.shape[-1]:
        x_other = x_other.unsqueeze(-1)[..., :0]
    if labels.dim() != 2 or labels.shape[0] != B:
        raise ValueError(f"labels must be [B={B}, L], got shape {tuple(labels.shape)}")
    L = labels.shape[1]
    for name, a, width in (("x_meta", x_meta, spec.meta_in), ("x_other", x_other, spec.other_in)):
        if a.dim() != 3 or a.shape[:2] != (B, L):
            raise ValueError(f"{name} must be [B={B}, L={L}, {width}], got shape {tuple(a.shape)}")
        if a.shape[2] != width:
            what = "meta_in" if name == "x_meta" else "other_in"
            raise ValueError(f"{name} has {a.shape[2]} columns but the model spec expects {what}={width}")
    if tuple(item_ids.shape) != (B, L):
        raise ValueError(f"item_ids must be [B={B}, L={L}], got shape {tuple(item_ids.shape)}")
    if tuple(task_ids.shape) != (B,):
        raise ValueError(f"task_ids must be [B={B}], got shape {tuple(task_ids.shape)}")
    mask_b = torch.arange(L, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    if check:
        bad = lengths < 1
        if bad.any():
            raise ValueError(f"empty tasks (lengths < 1) in {_where(bad, task_ids)}")
        bad = lengths > L
        if bad.any():
            raise ValueError(f"lengths exceed the padded length L={L} in {_where(bad, task_ids)}")
        for name, a in (("x_meta", x_meta), ("x_other", x_other)):
            if a.shape[2]:
                bad = (~finite_rows(a) & mask_b).any(-1)
                if bad.any():
                    raise ValueError(f"{name} has NaN/inf values in {_where(bad, task_ids)}")
        bad = (((labels != 0) & (labels != 1)) & mask_b).any(-1)
        if bad.any():
            raise ValueError(f"labels outside {{0, 1}} in {_where(bad, task_ids)}")
        if n_support is not None:
            bad = (n_support < 0) | (n_support > lengths)
            if bad.any():
                raise ValueError(f"n_support outside [0, length] in {_where(bad, task_ids)}")
    if stats is not None:  # the checks above ran on the raw values
        x_meta = standardize(x_meta, stats["meta_mean"], stats["meta_std"])
        x_other = standardize(x_other, stats["other_mean"], stats["other_std"])
    # Zero the padding: garbage (even NaN) there must not leak through 0 * NaN.
    m3 = mask_b.unsqueeze(-1)
    x_meta = torch.where(m3, x_meta, torch.zeros((), device=device))
    x_other = torch.where(m3, x_other, torch.zeros((), device=device))
    labels = torch.where(mask_b, labels, torch.zeros((), device=device))
    item_ids = torch.where(mask_b, item_ids, torch.zeros((), dtype=torch.int64, device=device))
    return Tensors(x_meta.contiguous(), x_other.contiguous(), item_ids, labels, lengths, task_ids,
                   mask_b.float(), n_support)
