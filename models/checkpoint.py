"""Checkpoints: spec + params + how they were trained, versioned by content hash.

The version is a hash of the spec and the parameter bytes, so the same weights
always get the same version (idempotent re-registration) and any change gets a
new one. Files are written atomically (a temp name and a rename locally, one PUT on object
storage): a crash never leaves a half-written checkpoint or a LATEST pointing at one.

`directory` / `path_or_dir` is a pathlib.Path or any object with the same few methods (`/`,
is_file, read_bytes, mkdir) plus `write_bytes_atomic(data)`: the pipelines hand in a
core.storage.Location, which reaches S3 as well; this module stays storage-agnostic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .blocks import ModelSpec, lr_shapes, param_shapes

FORMAT = "metaemb-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, tampered, or the wrong shape."""


@dataclass
class Checkpoint:
    spec: ModelSpec
    params: dict[str, torch.Tensor]  # names prefixed "meta." and "global."
    version: str = ""  # content hash of spec + params; filled in when empty
    mode: str = "limaml"  # limaml | maml | vanilla
    train_config: dict = field(default_factory=dict)
    meta_columns: list[str] = field(default_factory=list)
    context_columns: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    # Per-column input standardization learned on the training data:
    # {"meta_mean", "meta_std", "other_mean", "other_std"} -> float32 [width].
    # None = identity (checkpoints written before standardization existed).
    input_stats: dict | None = None
    # Meta-SGD ([train] meta_sgd): meta-learned per-parameter multipliers of the inner-loop lr,
    # {name: float32 tensor of blocks.lr_shapes(spec)[name]}; the fine-tune steps by lr · these.
    # None = one scalar lr (the plain SGD inner loop).
    lr_scale: dict | None = None
    # The fine-tune it is served with, chosen on validation tasks after training
    # (models.choice.FinetuneChoice.to_dict(): steps and lr per support-size bucket, and the
    # validation AUCs behind them). None = models.choice.FALLBACK in every bucket.
    finetune_choice: dict | None = None

    def __post_init__(self):
        if self.input_stats is not None:
            self.input_stats = {k: torch.as_tensor(v, dtype=torch.float32).detach().cpu().contiguous()
                                for k, v in self.input_stats.items()}
        if self.lr_scale is not None:
            self.lr_scale = {k: torch.as_tensor(v, dtype=torch.float32).detach().cpu().contiguous()
                             for k, v in self.lr_scale.items()}
        if not self.version:
            self.version = content_version(self.spec, self.params, self.input_stats, self.lr_scale,
                                           self.finetune_choice)


def content_version(spec: ModelSpec, params: dict[str, torch.Tensor], input_stats: dict | None = None,
                    lr_scale: dict | None = None, finetune_choice: dict | None = None) -> str:
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name in sorted(params):
        t = params[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    if input_stats is not None:  # absent for old checkpoints: their hash is unchanged
        for name in sorted(input_stats):
            t = torch.as_tensor(input_stats[name]).detach().to("cpu", torch.float32).contiguous()
            h.update(f"input_stats.{name}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    if lr_scale is not None:  # absent without Meta-SGD: those hashes are unchanged
        for name in sorted(lr_scale):
            t = torch.as_tensor(lr_scale[name]).detach().to("cpu", torch.float32).contiguous()
            h.update(f"lr_scale.{name}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    if finetune_choice is not None:  # what is served changes with it; its validation figures do not count
        served = {k: finetune_choice[k] for k in ("buckets", "short", "steps", "lr")}
        h.update(b"finetune_choice:" + json.dumps(served, sort_keys=True).encode())
    return h.hexdigest()[:12]


def check_lr_scale(spec: ModelSpec, lr_scale: dict | None, where: str = "checkpoint") -> None:
    """Learned lr multipliers: exactly the names and shapes of blocks.lr_shapes, finite and >= 0."""
    if lr_scale is None:
        return
    want = lr_shapes(spec)
    if set(lr_scale) != set(want):
        raise CheckpointError(f"{where}: lr_scale names {sorted(lr_scale)} do not match the spec's {sorted(want)}")
    for k, shape in want.items():
        t = lr_scale[k]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{where}: lr_scale {k} has shape {tuple(t.shape)}, the spec needs {shape}")
        if not (torch.isfinite(t).all() and (t >= 0).all()):
            raise CheckpointError(f"{where}: lr_scale {k} holds negative or non-finite values")


def check_shapes(spec: ModelSpec, params: dict, where: str = "checkpoint") -> None:
    want = param_shapes(spec)
    missing = sorted(set(want) - set(params))
    extra = sorted(set(params) - set(want))
    if missing or extra:
        raise CheckpointError(f"{where}: parameters do not match the spec: missing {missing}, unexpected {extra}")
    for k, shape in want.items():
        if tuple(params[k].shape) != shape:
            raise CheckpointError(f"{where}: parameter {k} has shape {tuple(params[k].shape)}, the spec needs {shape}")


def _check_stats(spec: ModelSpec, stats: dict | None, where: str) -> None:
    from .data import check_stats

    try:
        check_stats(stats, spec, where=f"{where}: input_stats")
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _atomic_write(path, data: bytes) -> None:
    if hasattr(path, "write_bytes_atomic"):
        path.write_bytes_atomic(data)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        Path(tmp).write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_folder(directory):
    return directory if hasattr(directory, "write_bytes_atomic") else Path(directory)


def save_checkpoint(ckpt: Checkpoint, directory):
    """Write <dir>/<version>.pt and point <dir>/LATEST at it (both atomic)."""
    check_shapes(ckpt.spec, ckpt.params)
    _check_stats(ckpt.spec, ckpt.input_stats, "checkpoint")
    check_lr_scale(ckpt.spec, ckpt.lr_scale)
    ckpt.version = content_version(ckpt.spec, ckpt.params, ckpt.input_stats, ckpt.lr_scale, ckpt.finetune_choice)
    d = _as_folder(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{ckpt.version}.pt"
    blob = {
        "format": FORMAT, "version": ckpt.version, "spec": ckpt.spec.to_dict(), "mode": ckpt.mode,
        "params": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in ckpt.params.items()},
        # JSON text: keeps torch.load(weights_only=True) happy whatever the dicts hold
        "train_config": json.dumps(ckpt.train_config, default=str),
        "metrics": json.dumps(ckpt.metrics, default=str),
        "meta_columns": list(ckpt.meta_columns), "context_columns": list(ckpt.context_columns),
    }
    if ckpt.input_stats is not None:
        blob["input_stats"] = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in ckpt.input_stats.items()}
    if ckpt.lr_scale is not None:
        blob["lr_scale"] = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in ckpt.lr_scale.items()}
    if ckpt.finetune_choice is not None:
        blob["finetune_choice"] = json.dumps(ckpt.finetune_choice)
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    _atomic_write(path, buffer.getvalue())
    _atomic_write(d / "LATEST", (ckpt.version + "\n").encode())
    return path


def load_checkpoint(path_or_dir, expect: ModelSpec | None = None) -> Checkpoint:
    """Load a checkpoint file, or the LATEST one of a folder. Verifies the content
    hash and, if `expect` is given, that the spec and shapes match it."""
    p = _as_folder(path_or_dir)
    if not p.is_file() and p.suffix != ".pt":  # a folder (on object storage: a prefix) with LATEST
        latest = p / "LATEST"
        if not latest.is_file():
            raise CheckpointError(f"{p}: no LATEST file; no checkpoint has been saved in this folder")
        p = p / f"{latest.read_text().strip()}.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    try:
        blob = torch.load(io.BytesIO(p.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / foreign pickle
        raise CheckpointError(f"{p}: corrupt or unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a metaemb checkpoint (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    try:
        spec = ModelSpec.from_dict(blob["spec"])
        params = dict(blob["params"])
        stats = blob.get("input_stats")  # absent in older checkpoints: identity
        stats = None if stats is None else dict(stats)
        lr_scale = blob.get("lr_scale")  # absent without Meta-SGD
        lr_scale = None if lr_scale is None else dict(lr_scale)
        choice = json.loads(blob["finetune_choice"]) if "finetune_choice" in blob else None
        ckpt = Checkpoint(spec=spec, params=params, version=blob["version"], mode=blob["mode"], input_stats=stats,
                          lr_scale=lr_scale, finetune_choice=choice,
                          train_config=json.loads(blob["train_config"]), metrics=json.loads(blob["metrics"]),
                          meta_columns=list(blob["meta_columns"]), context_columns=list(blob["context_columns"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt checkpoint metadata ({type(e).__name__}: {e})") from e
    check_shapes(spec, params, where=str(p))
    _check_stats(spec, ckpt.input_stats, str(p))
    check_lr_scale(spec, ckpt.lr_scale, str(p))
    actual = content_version(spec, params, ckpt.input_stats, ckpt.lr_scale, ckpt.finetune_choice)
    if actual != ckpt.version:
        raise CheckpointError(f"{p}: content hash {actual} does not match the recorded version {ckpt.version} (file altered or corrupt)")
    if expect is not None and expect != spec:
        diffs = [f"{k}: checkpoint {getattr(spec, k)!r} vs expected {getattr(expect, k)!r}"
                 for k in spec.to_dict() if getattr(spec, k) != getattr(expect, k)]
        raise CheckpointError(f"{p}: model spec mismatch ({'; '.join(diffs)}) — the checkpoint was trained "
                              f"for other feature columns/sizes; retrain or fix the config")
    return ckpt
