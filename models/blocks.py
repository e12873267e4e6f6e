"""The two blocks of the LiMAML network, written as functions of explicit parameters.

Parameters live in a flat dict {"meta.*": Tensor, "global.*": Tensor}. Every
function below accepts either *shared* parameters (no task dimension) or
*per-task* parameters (a leading task dimension B, i.e. one copy per task).
The same code therefore serves one task (x: [L, F]) and a batch of tasks
(x: [B, L, F]) — which is what lets the batched fine-tune be checked against a
plain per-task loop, and what lets us replace `vmap` by plain batched matmuls
(bmm) where those are faster.

Meta block:  e = f_meta(x_meta; θ_meta)              -> [.., L, embedding_dim]
Global block: logit = f_global([x_other, item_emb, e]; θ_global)
No dropout anywhere (the paper found it hurts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelSpec:
    meta_in: int  # number of meta feature columns (0 allowed when meta_block == "id")
    other_in: int  # number of context/other numeric columns (0 allowed)
    meta_block: str = "mlp"  # "mlp" | "id"
    meta_hidden: int = 128
    embedding_dim: int = 32
    global_hidden: tuple[int, ...] = (256, 128)
    item_buckets: int = 4096  # hashed item-id embedding in the global block; 0 = none
    item_dim: int = 16
    id_buckets: int = 65536  # task-id embedding rows for meta_block == "id"

    def __post_init__(self):
        object.__setattr__(self, "global_hidden", tuple(int(h) for h in self.global_hidden))
        if self.meta_block not in ("mlp", "id"):
            raise ValueError(f"meta_block must be 'mlp' or 'id', got {self.meta_block!r}")
        if self.meta_block == "mlp" and self.meta_in < 1:
            raise ValueError("meta_block 'mlp' needs meta_in >= 1 meta feature columns")
        if min(self.meta_in, self.other_in, self.item_buckets) < 0:
            raise ValueError("meta_in, other_in and item_buckets must be >= 0")
        if self.embedding_dim < 1 or self.meta_hidden < 1 or self.id_buckets < 1:
            raise ValueError("embedding_dim, meta_hidden and id_buckets must be >= 1")

    @classmethod
    def from_config(cls, model_cfg, meta_in: int, other_in: int) -> "ModelSpec":
        return cls(
            meta_in=int(meta_in), other_in=int(other_in), meta_block=model_cfg.meta_block,
            meta_hidden=model_cfg.meta_hidden, embedding_dim=model_cfg.embedding_dim,
            global_hidden=tuple(model_cfg.global_hidden), item_buckets=model_cfg.item_buckets,
            item_dim=model_cfg.item_dim, id_buckets=model_cfg.id_buckets,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["global_hidden"] = list(self.global_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**{**d, "global_hidden": tuple(d["global_hidden"])})

    @property
    def global_in(self) -> int:
        item = self.item_dim if self.item_buckets > 0 else 0
        return self.other_in + item + self.embedding_dim


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter; the single source of truth for the layout."""
    s: dict[str, tuple[int, ...]] = {}
    if spec.meta_block == "id":
        s["meta.id_table"] = (spec.id_buckets, spec.embedding_dim)
    if spec.meta_in > 0:  # "mlp", or "id" + a small MLP over the meta features
        s["meta.w1"] = (spec.meta_hidden, spec.meta_in)
        s["meta.b1"] = (spec.meta_hidden,)
        s["meta.w2"] = (spec.embedding_dim, spec.meta_hidden)
        s["meta.b2"] = (spec.embedding_dim,)
    if spec.item_buckets > 0:
        s["global.item_table"] = (spec.item_buckets, spec.item_dim)
    # First global layer is stored as three column blocks (other | item | e) so the
    # fine-tune can compute the frozen x_other/item part once instead of every step.
    h0 = spec.global_hidden[0] if spec.global_hidden else 1
    if spec.other_in > 0:
        s["global.w0_other"] = (h0, spec.other_in)
    if spec.item_buckets > 0:
        s["global.w0_item"] = (h0, spec.item_dim)
    s["global.w0_e"] = (h0, spec.embedding_dim)
    s["global.b0"] = (h0,)
    dims = list(spec.global_hidden) + [1]
    for i in range(1, len(dims)):
        s[f"global.w{i}"] = (dims[i], dims[i - 1])
        s[f"global.b{i}"] = (dims[i],)
    return s


def lr_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the per-parameter inner-loop step sizes (Meta-SGD): one per element of
    each meta parameter the inner loop adapts; an "id" block's task row ("meta.id_row", the
    task's own row of the table) has one per embedding dimension, shared by all rows."""
    s = {k: v for k, v in param_shapes(spec).items() if k.startswith("meta.") and k != "meta.id_table"}
    if spec.meta_block == "id":
        s["meta.id_row"] = (spec.embedding_dim,)
    return s


def init_params(spec: ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Kaiming-uniform-style init (like nn.Linear), deterministic in `seed`."""
    g = torch.Generator().manual_seed(int(seed))
    params: dict[str, torch.Tensor] = {}
    fan_in_of = {"global.w0_other": spec.global_in, "global.w0_item": spec.global_in, "global.w0_e": spec.global_in}
    for name, shape in param_shapes(spec).items():
        leaf = name.split(".", 1)[1]
        if leaf in ("id_table", "item_table"):
            t = torch.randn(shape, generator=g) * 0.01  # small: starts near "no personalization"
        elif leaf.startswith("w"):
            bound = 1.0 / math.sqrt(fan_in_of.get(name, shape[1]))
            t = (torch.rand(shape, generator=g) * 2 - 1) * bound
        else:  # biases start at zero
            t = torch.zeros(shape)
        params[name] = t.float().contiguous()
    return params


def split(params: dict) -> tuple[dict, dict]:
    meta = {k: v for k, v in params.items() if k.startswith("meta.")}
    glob = {k: v for k, v in params.items() if k.startswith("global.")}
    return meta, glob


# ---------------------------------------------------------------------------
# primitives that accept shared or per-task (leading B) parameters

def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x [.., L, in] @ w.T + b. w [out, in] is shared; w [B, out, in] is one per task."""
    if w.dim() == 3:  # per-task weights: batched matmul, x must be [B, L, in]
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
    return F.linear(x, w, b)


def lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows of an embedding table; ids are reduced modulo the table size (hashing)."""
    if table.dim() == 3:  # per-task tables [B, V, d], ids [B, L]
        idx = torch.remainder(ids, table.shape[1])
        return table[torch.arange(table.shape[0], device=ids.device).unsqueeze(1), idx]
    return F.embedding(torch.remainder(ids, table.shape[0]), table)


# ---------------------------------------------------------------------------
# the blocks

def task_view(params: dict, spec: ModelSpec, task_ids: torch.Tensor | None) -> dict:
    """The parameters as one task (or a batch of tasks) sees them.

    For an "id" meta block only the task's own row of the id table matters, so it
    is gathered once ("meta.id_row"); fine-tuning that row is exactly fine-tuning
    the table (the other rows get zero gradient) without copying the whole table
    per task.
    """
    if spec.meta_block != "id":
        return dict(params)
    out = {k: v for k, v in params.items() if k != "meta.id_table"}
    out["meta.id_row"] = lookup(params["meta.id_table"], task_ids)  # [B, E] or [E]
    return out


def meta_forward(p: dict, x_meta: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Meta embedding for every sample: [.., L, embedding_dim]. No final activation:
    the embedding is a free vector consumed by a linear layer of the global block."""
    e = None
    if "meta.w1" in p:
        h = torch.relu(linear(x_meta, p["meta.w1"], p["meta.b1"]))
        e = linear(h, p["meta.w2"], p["meta.b2"])
    if "meta.id_row" in p:
        row = p["meta.id_row"].unsqueeze(-2)  # [.., 1, E]
        row = row.expand(*x_meta.shape[:-1], spec.embedding_dim)
        e = row if e is None else e + row
    return e


def global_pre(g: dict, x_other: torch.Tensor, item_ids: torch.Tensor, spec: ModelSpec) -> torch.Tensor | None:
    """The part of the first global layer that does not depend on e (plus its bias)."""
    pre = None
    if "global.w0_other" in g:
        pre = linear(x_other, g["global.w0_other"], g["global.b0"])
    if "global.item_table" in g:
        item = linear(lookup(g["global.item_table"], item_ids), g["global.w0_item"], None)
        pre = item if pre is None else pre + item
    if pre is None:  # no other features at all: the bias alone
        b = g["global.b0"]
        pre = (b.unsqueeze(-2) if b.dim() == 2 else b).expand(*item_ids.shape, b.shape[-1])
    elif "global.w0_other" not in g:
        b = g["global.b0"]
        pre = pre + (b.unsqueeze(-2) if b.dim() == 2 else b)
    return pre


def global_from_pre(g: dict, pre: torch.Tensor, e: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Logits [.., L] from the e-independent part `pre` and the meta embedding e."""
    h = pre + linear(e, g["global.w0_e"], None)
    n = len(spec.global_hidden)
    for i in range(1, n + 1):
        h = linear(torch.relu(h), g[f"global.w{i}"], g[f"global.b{i}"])
    return h.squeeze(-1)


def logits(p: dict, x_meta, x_other, item_ids, spec: ModelSpec) -> torch.Tensor:
    """Full model on task-view params p: logits [.., L] (each sample its own e)."""
    e = meta_forward(p, x_meta, spec)
    return global_from_pre(p, global_pre(p, x_other, item_ids, spec), e, spec)


def masked_task_loss(logit: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE per task over its valid samples: [..]. A task with no valid sample gets 0."""
    bce = F.binary_cross_entropy_with_logits(logit, labels, reduction="none")
    return (bce * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
