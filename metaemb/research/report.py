"""The evaluation's report: report.md (the paper's Table 3 and Table 4 layouts) and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {"vanilla": "Vanilla training", "maml": "Entire-network MAML", "limaml": "LiMAML"}
METHODS = tuple(LABELS)
SLICES = ("all", "lt25", "ge25", "cold")


def markdown(rows: list[dict], std: dict, meta: dict) -> str:
    get = {(r["method"], r["meta_block"], r["fine_tune"], r["slice"]): r for r in rows}

    def cell(m, ft, sl, with_auc=True, block="mlp", base_block="mlp"):
        r, b = get.get((m, block, ft, sl)), get.get(("vanilla", base_block, False, sl))
        if r is None or b is None or not np.isfinite(r["auc"]):
            return "n/a"
        gain = 100.0 * (r["auc"] / b["auc"] - 1.0)
        s = f"{gain:+.2f}%"
        return f"{r['auc']:.4f} ± {std[(m, block, ft, sl)]:.4f} ({s})" if with_auc else s

    lines = ["# LiMAML evaluation (paper Table 3 layout)", "",
             f"{meta['events']} events, {meta['tasks']} tasks; {meta['seeds']} seed(s); up to {meta['epochs']} epochs "
             f"(best epoch on validation); fine-tune (steps, lr) chosen on validation from {list(meta['grid'])}, "
             "separately for tasks with < 25 and >= 25 support samples; (0, 0.0) means no fine-tune for "
             "that bucket (the daily job's `[finetune] min_samples`).", "",
             "## AUC gain over vanilla training without fine-tune (all test tasks)", "",
             "| | " + " | ".join(LABELS[m] for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for ft in (False, True):
        lines.append(f"| {'w/ fine-tune' if ft else 'w/o fine-tune'} | "
                     + " | ".join(cell(m, ft, "all", False) for m in METHODS) + " |")
    lines += ["", "## AUC by slice (mean ± std over seeds, gain vs vanilla w/o fine-tune)", "",
              "| Algorithm | Fine-tune | " + " | ".join(SLICES) + " |", "|---|---|" + "---|" * len(SLICES)]
    for m in METHODS:
        for ft in (False, True):
            lines.append(f"| {LABELS[m]} | {'yes' if ft else 'no'} | " + " | ".join(cell(m, ft, sl) for sl in SLICES) + " |")
    if ("vanilla", "id", False, "all") in get:
        lines += ["", "## Table 4 layout: LiMAML vs a task-ID embedding model (gain vs the ID model, w/o fine-tune)", "",
                  "| Global block | Meta block | Fine-tune | " + " | ".join(SLICES) + " |", "|---|---|---|" + "---|" * len(SLICES)]
        for label, m, block, ft in (("MLP + ID embeddings (vanilla training)", "vanilla", "id", False),
                                    ("MLP", "limaml", "id", True), ("MLP", "limaml", "mlp", True)):
            meta_label = "n/a" if m == "vanilla" else {"id": "ID embeddings", "mlp": "MLP"}[block]
            lines.append(f"| {label} | {meta_label} | {'yes' if ft else 'no'} | "
                         + " | ".join(cell(m, ft, sl, block=block, base_block="id") for sl in SLICES) + " |")
        lines += ["", "The ID meta block is a hashed task-ID embedding plus a small MLP over the task's history "
                  "features (the same inputs as the MLP block); a cold task's ID row was never trained."]
    n = {sl: get[("vanilla", "mlp", False, sl)]["n_tasks"] for sl in SLICES if ("vanilla", "mlp", False, sl) in get}
    lines += ["", "Tasks per slice: " + ", ".join(f"{k} {v}" for k, v in n.items())
              + " (lt25/ge25: the task's support samples before its test queries; cold: no event in the training period).", "",
              f"Split: training = events before the {meta['split'][0]:.0%} quantile of event time; each task's later events, "
              f"in its own time order: first {meta['split'][1]:.0%} support only, then validation queries up to "
              f"{meta['split'][2]:.0%}, then test queries; support at test = the task's last N events before its test "
              "queries (its validation events included).", "",
              "Choices made on validation: " + json.dumps(meta["chosen"]), "",
              *([f"Training ([train]; meta_sgd applies to LiMAML only): {json.dumps(meta['train'])}.", ""]
                if "train" in meta else []),
              f"Model: {json.dumps(meta['spec'])}; meta features {meta['meta_columns']}; other features "
              f"{meta['other_columns']}. Run time {meta['seconds']} s.", ""]
    return "\n".join(lines)


def plots(rows: list[dict], curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = {(r["method"], r["fine_tune"], r["slice"]): r["auc"] for r in rows}  # MLP meta block rows
    fig, ax = plt.subplots(figsize=(9, 4))
    w = 0.13
    for j, (m, ft) in enumerate((m, ft) for m in METHODS for ft in (False, True)):
        xs = np.arange(len(SLICES)) + (j - 2.5) * w
        ax.bar(xs, [get.get((m, ft, s), np.nan) for s in SLICES], w, label=f"{m}{' + FT' if ft else ''}")
    ax.set_xticks(np.arange(len(SLICES)), SLICES)
    vals = [v for v in get.values() if np.isfinite(v)]
    if vals:
        ax.set_ylim(max(0.0, min(vals) - 0.03), min(1.0, max(vals) + 0.02))
    ax.set_ylabel("test AUC")
    ax.legend(ncol=3, fontsize=8)
    ax.set_title("AUC by method, fine-tune and slice")
    fig.tight_layout()
    fig.savefig(out / "auc_by_slice.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {"vanilla": "C0", "maml": "C1", "limaml": "C2", "vanilla+id": "C3", "limaml+id": "C4"}
    for m, runs in curves.items():
        for i, c in enumerate(runs):
            ax.plot(np.arange(1, len(c) + 1), c, color=colors[m], alpha=0.7, label=m if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUC (training-style)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=100)
    plt.close(fig)
