"""The meta block's inner loop with a hand-written backward and no per-task first-layer weight.

One task (the code is batched over a leading task dim B): samples x_s (rows of X [L, F]),
meta block u = W1 x + b1, h = relu(u), e = W2 h + b2 (+ the task's id row r), then the frozen
global block turns e into a logit z_s; the loss is ℓ = Σ_s w_s BCE(z_s, y_s), w_s = m_s / Σ m.

Backward by hand (the global block is frozen: input gradients only, no weight grads):
    d_s = ∂ℓ/∂z_s = w_s (σ(z_s) − y_s)
    g_s = ∂ℓ/∂e_s                     global block, backwards from d_s
    ∂ℓ/∂W2 = Σ_s g_s h_sᵀ             ∂ℓ/∂b2 = ∂ℓ/∂r = Σ_s g_s
    v_s = (W2ᵀ g_s) ⊙ [u_s > 0]
    ∂ℓ/∂W1 = Σ_s v_s x_sᵀ             ∂ℓ/∂b1 = Σ_s v_s

No per-task W1. An SGD step moves W1 by −α Σ_s v_s x_sᵀ and b1 by −α Σ_s v_s, so on any
sample x_r the first layer moves by u_r ← u_r − α Σ_s v_s (x_s·x_r + 1), i.e.

    U ← U − α (X Xᵀ + 1) V

with the task's [L, L] Gram matrix X Xᵀ, computed once (X is fixed). Step 0 uses the
shared W1 for every task: one GEMM over the whole chunk. W2's input h changes every
step, so W2 is kept per task (steps 1..k−1 read it), but the last step's update is
only ever applied to the rows that are embedded:
    e_r ← W2 h_r + b2 − α Σ_s g_s (h_s·h_r + 1).

Per-parameter learning rates (Meta-SGD: `lr` a dict name -> tensor of the parameter's shape,
"meta.id_row" [E]): an element-wise lr A breaks the Gram form of the first layer, so there the
update is made explicit, ΔW1 = Vᵀ X per task [B, H, F] and U ← U − X (A1 ⊙ ΔW1)ᵀ − a_b1 ⊙ Σ_s v_s
(O(L·F·H) per task instead of the Gram's O(L²·H)); W2 and b2 move by A2 ⊙ Gᵀ H and a_b2 ⊙ Σ_s g_s.
A scalar lr takes the Gram path above, unchanged.

Every function works on tensors that carry autograd history too, so training can
differentiate through the inner loop (second-order) exactly as through autograd's, the
per-parameter lrs included.
"""

from __future__ import annotations

import torch

from . import blocks
from .blocks import ModelSpec


def relu_grad(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """g ⊙ [a > 0] for a = relu(z): autograd's own relu backward, differentiable in g when
    training records the inner loop, else in place (g is always a fresh temporary here)."""
    if torch.is_grad_enabled() and (g.requires_grad or a.requires_grad):
        return torch.ops.aten.threshold_backward(g, a, 0)
    return torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=g)


def input_grad(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∂/∂x of Σ g·(x wᵀ) for a shared w [out, in] or per-task w [B, out, in]."""
    return torch.matmul(g, w)


def global_input_grad(glob: dict, pre: torch.Tensor, e: torch.Tensor, labels: torch.Tensor,
                      weight: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """g = ∂ℓ/∂e [B, L, E] for ℓ = Σ_s weight_s·BCE(f(e_s), y_s), f the frozen global block
    (`pre` = its first layer's e-independent part, blocks.global_pre).

    The block is shared by every sample, so it runs on the chunk's samples flattened: one
    GEMM per layer. `pre` enters as addmm's accumulator and relu runs in place, which saves
    passes over the [N, hidden] arrays, the costliest non-GEMM work here."""
    n = len(spec.global_hidden)
    shape = e.shape
    z = torch.addmm(pre.reshape(-1, pre.shape[-1]), e.reshape(-1, shape[-1]), glob["global.w0_e"].t())
    acts = []
    for i in range(1, n + 1):
        acts.append(z.relu_())
        z = torch.addmm(glob[f"global.b{i}"], acts[-1], glob[f"global.w{i}"].t())
    d = (torch.sigmoid(z) - labels.reshape(-1, 1)) * weight.reshape(-1, 1)  # [N, 1]: ∂ℓ/∂z
    for i in range(n, 0, -1):
        w = glob[f"global.w{i}"]
        d = relu_grad(d * w[0] if i == n else d @ w, acts[i - 1])  # last layer: w is [1, h]
    return (d @ glob["global.w0_e"]).view(shape)


def init_state(p: dict, spec: ModelSpec, x_meta: torch.Tensor, explicit: bool, per_param: bool = False) -> dict:
    """Step-0 state: the shared weights, seen by every task of the chunk."""
    s: dict = {"pending": None}  # the last step's (h, g, v), applied lazily (settle / rows_embedding)
    if "meta.w1" in p:
        if per_param:  # element-wise lrs: explicit ΔW1 instead of the Gram matrix
            s["x"] = x_meta
        else:
            ones = torch.ones((), dtype=x_meta.dtype, device=x_meta.device)
            s["gram"] = torch.baddbmm(ones, x_meta, x_meta.transpose(1, 2))  # X Xᵀ + 1 (the bias column)
        s["u"] = blocks.linear(x_meta, p["meta.w1"], p["meta.b1"])  # one GEMM: shared W1
        s["w2"], s["b2"] = p["meta.w2"], p["meta.b2"]
        if explicit:
            s["v_sum"] = None  # Σ_t V_t, for W1's explicit per-task update (adapted_params)
    if "meta.id_row" in p:
        s["row"] = p["meta.id_row"]  # [B, E]
    return s


def meta_out(s: dict, h: torch.Tensor | None, shape) -> torch.Tensor:
    """e for the rows whose hidden activations are h (None: id row only)."""
    e = None if h is None else blocks.linear(h, s["w2"], s["b2"])
    if "row" in s:
        row = s["row"].unsqueeze(-2).expand(*shape, s["row"].shape[-1])
        e = row if e is None else e + row
    return e


def w2_updated(s: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(W2, b2) after the last step's pending update."""
    h, g, _ = s["pending"]
    lrs = s["lrs"]
    if lrs is not None:
        return s["w2"] - lrs["meta.w2"] * torch.bmm(g.transpose(1, 2), h), s["b2"] - lrs["meta.b2"] * g.sum(1)
    lr = s["lr"]
    w2 = s["w2"] if s["w2"].dim() == 3 else s["w2"].expand(h.shape[0], *s["w2"].shape)
    return torch.baddbmm(w2, g.transpose(1, 2), h, alpha=-lr), torch.sub(s["b2"], g.sum(1), alpha=lr)


def u_moved(s: dict, u: torch.Tensor, rows=None) -> torch.Tensor:
    """First-layer pre-activations u (all rows, or the rows `rows` picks) after the pending step."""
    v = s["pending"][2]
    lrs = s["lrs"]
    if lrs is None:
        gram = s["gram"] if rows is None else rows(s["gram"])
        return torch.baddbmm(u, gram, v, alpha=-s["lr"])
    x = s["x"] if rows is None else rows(s["x"])
    dw1 = lrs["meta.w1"] * torch.bmm(v.transpose(1, 2), s["x"])  # [B, H, F]
    return torch.baddbmm(u, x, dw1.transpose(1, 2), alpha=-1.0) - (lrs["meta.b1"] * v.sum(1)).unsqueeze(1)


def settle(s: dict) -> None:
    """Apply the last step's pending update to W2, b2 and every row of U."""
    if s["pending"] is None:
        return
    s["w2"], s["b2"] = w2_updated(s)
    s["u"] = u_moved(s, s["u"])
    s["pending"] = None


def step(s: dict, glob: dict, spec: ModelSpec, pre: torch.Tensor, labels: torch.Tensor,
         weight: torch.Tensor) -> None:
    """One SGD step of every task's meta params, on the state (see the module docstring)."""
    settle(s)
    h = torch.relu(s["u"]) if "u" in s else None
    e = meta_out(s, h, labels.shape)
    g = global_input_grad(glob, pre, e, labels, weight, spec)
    if h is not None:
        v = relu_grad(input_grad(g, s["w2"]), h)
        s["pending"] = (h, g, v)
        if "v_sum" in s:
            s["v_sum"] = v if s["v_sum"] is None else s["v_sum"] + v
    if "row" in s:
        if s["lrs"] is not None:
            s["row"] = s["row"] - s["lrs"]["meta.id_row"] * g.sum(1)
        else:
            s["row"] = torch.sub(s["row"], g.sum(1), alpha=s["lr"])


def adapt_state(p: dict, spec: ModelSpec, x_meta, pre, labels, mask, steps: int, lr,
                explicit: bool = False) -> dict:
    """`steps` SGD steps of each task's meta params (task-view p, shared) on its masked mean
    BCE. lr: a float, or per-parameter lrs {name: tensor} (Meta-SGD; see the module docstring).
    explicit: keep what adapted_params needs to form per-task weights."""
    glob = {k: v for k, v in p.items() if k.startswith("global.")}
    weight = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
    per_param = isinstance(lr, dict)
    s = init_state(p, spec, x_meta, explicit, per_param)
    s["lr"], s["lrs"] = (None, lr) if per_param else (lr, None)
    for _ in range(steps):
        step(s, glob, spec, pre, labels, weight)
    return s


def rows_embedding(s: dict, rows: torch.Tensor | None, L: int) -> torch.Tensor:
    """Adapted meta embedding of samples `rows` [B, R] (None: all L rows): [B, R, E]."""
    if "u" not in s:
        return meta_out(s, None, (s["row"].shape[0], L if rows is None else rows.shape[1]))
    if rows is None:
        settle(s)
        h = torch.relu(s["u"])
        return meta_out(s, h, h.shape[:-1])

    def pick(x):
        return torch.gather(x, 1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    u = pick(s["u"])
    if s["pending"] is not None:  # the last step, on these rows only: −α (X Xᵀ + 1)[rows] V
        u = u_moved(s, u, pick)
    h = torch.relu(u)
    if s["pending"] is not None and s["lrs"] is not None:  # element-wise lrs: W2, b2 made explicit
        w2, b2 = w2_updated(s)
        return meta_out({**s, "w2": w2, "b2": b2}, h, h.shape[:-1])
    e = meta_out(s, h, h.shape[:-1])
    if s["pending"] is not None:  # and W2, b2: −α Σ_s g_s (h_s·h_r + 1)
        h_s, g, _ = s["pending"]
        ones = torch.ones((), dtype=h.dtype, device=h.device)
        e = torch.baddbmm(e, torch.baddbmm(ones, h, h_s.transpose(1, 2)), g, alpha=-s["lr"])
    return e


def adapted_params(p: dict, s: dict, x_meta: torch.Tensor) -> dict:
    """The task-view params with explicit per-task meta weights (as `finetune.adapt` returns);
    s from adapt_state(..., explicit=True)."""
    out = dict(p)
    lrs = s["lrs"]
    lr_w1, lr_b1 = (s["lr"], s["lr"]) if lrs is None else (lrs["meta.w1"], lrs["meta.b1"])
    if "u" in s:
        B = x_meta.shape[0]
        w1, b1 = p["meta.w1"], p["meta.b1"]
        if s["v_sum"] is None:
            w1, b1 = w1.expand(B, *w1.shape), b1.expand(B, *b1.shape)
        else:
            w1 = w1 - lr_w1 * torch.bmm(s["v_sum"].transpose(1, 2), x_meta)
            b1 = b1 - lr_b1 * s["v_sum"].sum(1)
        w2, b2 = (s["w2"], s["b2"]) if s["pending"] is None else w2_updated(s)
        if w2.dim() == 2:
            w2, b2 = w2.expand(B, *w2.shape), b2.expand(B, *b2.shape)
        out.update({"meta.w1": w1, "meta.b1": b1, "meta.w2": w2, "meta.b2": b2})
    if "row" in s:
        out["meta.id_row"] = s["row"]
    return out
