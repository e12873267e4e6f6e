"""The paper's evaluation protocol (Table 3) on any interactions file — pure pandas/torch.

Protocol (per task chronological, never a peek forward within a task):
  events before t1 (a global time quantile, 0.7 by default)
        -> training: each task's history cut into chronological windows of at most N
           samples, first 75% support / last 25% query. Tasks with no event before t1
           are "cold" (never seen in training; the paper's cohort 3).
  each task's events from t1 on, in its own time order (m events):
        [0, 25%)   support only (so a cold task has its own history at validation too)
        [25%, 50%) validation query; support = the task's last N events before them.
                   Epochs and the fine-tune (steps, lr) are chosen here, on validation AUC only.
        [50%, 100%) test query; support = the task's last N events before them, i.e. its
                   pre-t1 history plus its support-only and validation events (DESIGN.md:
                   validation data is the support set at inference, test data the query set).
So every evaluated task, cold ones included, is fine-tuned on its own earlier history,
and train < validation < test in time for every task.
Scoring is the serving path: the task's embedding is the (fine-tuned) meta block on its
most recent support sample, fed with each query sample's other features to the global
block. "Fine-tune" adapts the parameters each method adapts in its inner loop: the meta
block for LiMAML, the whole network for MAML and for vanilla (the paper's fine-tuned
baseline). A task with no support at all is scored without adaptation.
AUC is pooled over the query samples of a slice: all, lt25 / ge25 (support samples),
cold (tasks with no event in the training period).
Features: meta = the task's leak-free history (past count, smoothed positive rate, from
strictly earlier timestamps) [+ entity features, point-in-time]; other = the item's
leak-free history [+ numeric context columns] and the item id embedding. All are
standardized with training-period statistics (train() also stores its own in the checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core import config as config_mod
from models.blocks import ModelSpec
from models.data import TaskBatch
from models.metrics import auc
from models.train import train
from models.choice import BUCKETS, GRID, bucket_of, choose, query_logits
from metaemb.research.report import METHODS, markdown, plots

PRIOR_WEIGHT = 2.0  # pseudo-count pulling a short history's positive rate to the global rate


# ---------------------------------------------------------------------------
# data


def read_table(path) -> pd.DataFrame:
    p = Path(path)
    if p.suffix == ".csv":
        return pd.read_csv(p)
    if p.is_dir() and (p / "_delta_log").is_dir():
        raise ValueError(f"{p}: Delta input is read by the Spark pipeline; export Parquet for evaluate")
    return pd.read_parquet(p)


def history_features(df: pd.DataFrame, keys: list[str], prefix: str, rate0: float) -> pd.DataFrame:
    """Past count and smoothed positive rate of `keys`, from strictly earlier timestamps only
    (events sharing a timestamp do not see each other's labels)."""
    g = df.groupby(keys + ["ts"], sort=True)["label"].agg(["size", "sum"]).reset_index()
    grp = g.groupby(keys, sort=False)
    g["n_before"] = grp["size"].cumsum() - g["size"]
    g["pos_before"] = grp["sum"].cumsum() - g["sum"]
    g[f"{prefix}_log_n"] = np.log1p(g["n_before"])
    g[f"{prefix}_rate"] = (g["pos_before"] + PRIOR_WEIGHT * rate0) / (g["n_before"] + PRIOR_WEIGHT)
    out = df[keys + ["ts"]].merge(g[keys + ["ts", f"{prefix}_log_n", f"{prefix}_rate"]], on=keys + ["ts"], how="left")
    return out[[f"{prefix}_log_n", f"{prefix}_rate"]].set_index(df.index)


def load_events(interactions_path, features_path, task_key: list[str], t1_q: float,
                max_events: int | None = None):
    df = read_table(interactions_path)
    missing = {*task_key, "item_id", "event_timestamp", "label"} - set(df.columns)
    if missing:
        raise ValueError(f"{interactions_path}: missing columns {sorted(missing)}")
    df = df.dropna(subset=[*task_key, "item_id", "event_timestamp", "label"])
    df = df[df["label"].isin([0, 1])].copy()
    df["ts"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("int64") // 10**9
    df = df.sort_values(["ts"], kind="stable").reset_index(drop=True)
    if max_events:
        df = df.iloc[:max_events].reset_index(drop=True)
    t1 = float(np.quantile(df["ts"], t1_q))
    train_mask = df["ts"] < t1
    rate0 = float(df.loc[train_mask, "label"].mean())
    df["task"] = pd.util.hash_pandas_object(df[task_key], index=False).astype("int64")
    # dense item codes: ids seen in training first, so hashing adds no collisions here
    order = pd.concat([df.loc[train_mask, "item_id"], df.loc[~train_mask, "item_id"]]).unique()
    df["item"] = pd.Series(np.arange(len(order)), index=order).reindex(df["item_id"]).to_numpy()
    meta_cols, other_cols = ["task_log_n", "task_rate"], ["item_log_n", "item_rate"]
    df[meta_cols] = history_features(df, ["task"], "task", rate0)
    df[other_cols] = history_features(df, ["item"], "item", rate0)
    skip = {*task_key, "item_id", "event_timestamp", "label", "ts", "task", "item", *meta_cols, *other_cols}
    context = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]
    other_cols += context
    if features_path:
        feats = read_table(features_path)
        feats["fts"] = pd.to_datetime(feats["feature_timestamp"], utc=True).astype("int64") // 10**9
        fcols = [c for c in feats.columns if c not in {*task_key, "feature_timestamp", "fts"}
                 and pd.api.types.is_numeric_dtype(feats[c])]
        # point in time: the latest snapshot at or before the event, per task key
        merged = pd.merge_asof(df.reset_index().sort_values("ts"), feats.sort_values("fts")[[*task_key, "fts", *fcols]],
                               left_on="ts", right_on="fts", by=task_key, direction="backward")
        df = merged.sort_values("index").set_index("index").rename_axis(None)
        df[fcols] = df[fcols].fillna(df.loc[df["ts"] < t1, fcols].mean()).fillna(0.0)
        meta_cols += fcols
    # standardize with training-period statistics
    for c in meta_cols + other_cols:
        tr = df.loc[df["ts"] < t1, c].astype(float)
        df[c] = ((df[c].astype(float) - tr.mean()) / (tr.std() or 1.0)).fillna(0.0).astype("float32")
    return df, t1, meta_cols, other_cols


def pack(groups: list[pd.DataFrame], meta_cols, other_cols) -> dict:
    """Variable-length per-task frames -> padded arrays (at least length 1)."""
    B = len(groups)
    L = max([1] + [len(g) for g in groups])
    out = {"x_meta": np.zeros((B, L, len(meta_cols)), np.float32), "x_other": np.zeros((B, L, len(other_cols)), np.float32),
           "item_ids": np.zeros((B, L), np.int64), "labels": np.zeros((B, L), np.float32),
           "lengths": np.zeros(B, np.int64)}
    for i, g in enumerate(groups):
        n = len(g)
        out["lengths"][i] = n
        if n:
            out["x_meta"][i, :n] = g[meta_cols].to_numpy(np.float32)
            out["x_other"][i, :n] = g[other_cols].to_numpy(np.float32)
            out["item_ids"][i, :n] = g["item"].to_numpy()
            out["labels"][i, :n] = g["label"].to_numpy(np.float32)
    return out


def training_tasks(df, t1, N, meta_cols, other_cols, support_fraction=0.75) -> TaskBatch:
    """Each task's training history in chronological windows of <= N samples."""
    groups, tids = [], []
    for task, g in df[df["ts"] < t1].groupby("task", sort=False):
        n = len(g)
        for end in range(n, 0, -N):  # most recent window first; an older remainder too
            groups.append(g.iloc[max(0, end - N):end])
            tids.append(task)
    a = pack(groups, meta_cols, other_cols)
    ns = np.maximum(1, np.floor(a["lengths"] * support_fraction)).astype(np.int64)
    return TaskBatch(task_ids=np.array(tids, np.int64), n_support=ns, **a)


def eval_tasks(df, t1, lo_frac, hi_frac, N, meta_cols, other_cols, train_tasks: set) -> dict:
    """Per task with events from t1 on (m of them, chronological): query = those events
    [floor(lo_frac*m), floor(hi_frac*m)); support = the task's last N events before the query."""
    sup, qry, tids = [], [], []
    post = df["ts"] >= t1
    for task, g in df[df["task"].isin(set(df.loc[post, "task"]))].groupby("task", sort=False):
        first_post = int(np.searchsorted(g["ts"].to_numpy(), t1, side="left"))  # df is sorted by ts
        m = len(g) - first_post
        a, b = first_post + int(np.floor(lo_frac * m)), first_post + int(np.floor(hi_frac * m))
        if b <= a:
            continue
        s = g.iloc[max(0, a - N):a]
        # no history: a stand-in sample (the first query sample's features, no label
        # used: it is masked out) so the task can still be scored with θ
        sup.append(s if len(s) else g.iloc[a:a + 1])
        qry.append(g.iloc[a:b])
        tids.append((task, len(s)))
    S, Q = pack(sup, meta_cols, other_cols), pack(qry, meta_cols, other_cols)
    n_sup = np.array([n for _, n in tids], np.int64)
    tids = np.array([t for t, _ in tids], np.int64)
    return {"support": TaskBatch(task_ids=tids, **S), "query": TaskBatch(task_ids=tids, **Q), "n_support": n_sup,
            "cold": np.array([t not in train_tasks for t in tids], bool)}


# ---------------------------------------------------------------------------
# scoring


def predict(params, spec: ModelSpec, ev: dict, steps: int, lr: float, which: str, stats=None,
            lr_scale=None) -> np.ndarray:
    """Query logits [T, Lq] of the evaluation tasks after the fine-tune (models.choice.query_logits)."""
    return query_logits(params, spec, ev["support"], ev["query"], ev["n_support"], steps, lr, which, stats, lr_scale)


def slice_aucs(ev: dict, logits: np.ndarray) -> dict:
    q = ev["query"]
    valid = np.arange(q.labels.shape[1])[None, :] < q.lengths[:, None]
    bucket = bucket_of(ev["n_support"])
    sel = {"all": np.ones(len(q.lengths), bool), **{name: bucket == b for b, name in enumerate(BUCKETS)},
           "cold": ev["cold"]}
    res = {}
    for name, m in sel.items():
        mm = valid & m[:, None]
        res[name] = (auc(q.labels[mm], logits[mm]) if mm.any() else float("nan"), int(m.sum()))
    return res


# ---------------------------------------------------------------------------
# the protocol


def run_evaluate(interactions_path, out_dir, features_path=None, task_key=("user_id",), cfg=None, seeds=1,
                 progress: Callable[[str], None] = print, quick: bool = False, epochs: int | None = None,
                 ft_grid: tuple | None = None, split=(0.7, 0.25, 0.5), max_events: int | None = None,
                 id_block: bool = True) -> list[dict]:
    """Train vanilla / maml / limaml (per seed), fine-tune or not, report AUC by slice
    (Table 3); with id_block, also the ID-embedding comparison (Table 4). split = (t1 quantile of event time ending training, then the fractions of each task's
    events from t1 on where validation starts and test starts)."""
    t_start = time.time()
    cfg = cfg or config_mod.Config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    N = int(cfg.pipeline.cap_samples)
    t1_q, v_frac, t_frac = split
    df, t1, meta_cols, other_cols = load_events(interactions_path, features_path, list(task_key), t1_q,
                                                max_events=max_events)
    progress(f"evaluate: {len(df)} events, {df['task'].nunique()} tasks; meta {meta_cols}, other {other_cols}")
    model_cfg = cfg.model
    if quick:
        model_cfg = replace(model_cfg, meta_hidden=32, global_hidden=[64, 32], item_buckets=min(model_cfg.item_buckets or 0, 2048))
    n_items = int(df["item"].max()) + 1
    item_buckets = max(model_cfg.item_buckets, n_items) if model_cfg.item_buckets else 0
    specs = {block: ModelSpec.from_config(replace(model_cfg, item_buckets=item_buckets, meta_block=block),
                                          len(meta_cols), len(other_cols))
             for block in ("mlp", "id")}
    train_set = set(df.loc[df["ts"] < t1, "task"])
    tr = training_tasks(df, t1, N, meta_cols, other_cols, cfg.pipeline.support_fraction)
    va = eval_tasks(df, t1, v_frac, t_frac, N, meta_cols, other_cols, train_set)
    te = eval_tasks(df, t1, t_frac, 1.0, N, meta_cols, other_cols, train_set)
    # train()'s own validation (epoch choice): support then (capped) query of validation tasks
    has = va["n_support"] > 0
    vb = _concat(va, has, N)
    progress(f"split: train {len(tr)} task windows | validation {len(va['n_support'])} tasks | test "
             f"{len(te['n_support'])} tasks ({int(te['cold'].sum())} cold)")
    n_epochs = epochs or (4 if quick else 5)
    # models.choice.GRID, which `metaemb train` chooses from too; (0, 0.0) = no fine-tune:
    # validation may find that a bucket is better left un-tuned
    grid = ft_grid or (((0, 0.0), (1, 0.3), (3, 0.3)) if quick else GRID)
    results: dict = {}  # (method, meta_block, ft, slice) -> list of (auc, n)
    chosen: dict = {}
    curves: dict = {}
    # Table 3: the three training methods with an MLP meta block. Table 4: the paper's
    # ID-embedding comparison -- vanilla training of the network with a task-ID embedding
    # layer as its meta block (a wide & deep ID model, no fine-tune) against LiMAML with
    # that ID layer and LiMAML with the MLP meta block, both fine-tuned.
    runs = [(m, "mlp") for m in METHODS] + ([("vanilla", "id"), ("limaml", "id")] if id_block else [])
    for method, block in runs:
        name = method if block == "mlp" else f"{method}+id"
        for seed in range(int(seeds)):
            tc = replace(cfg.train, mode=method, epochs=n_epochs, seed=seed,
                         meta_sgd=cfg.train.meta_sgd and method == "limaml")  # Meta-SGD: the meta block's lrs
            ck, best, no_ft, ft = fit_and_score(specs[block], tc, tr, vb, va, te, grid)
            curves.setdefault(name, []).append([v["auc"] for v in ck.metrics["valid"]])
            chosen.setdefault(name, []).append({"seed": seed, "best_epoch": ck.metrics["best_epoch"],
                                                **{f"ft_{b}": list(best[b]) for b in BUCKETS},
                                                **({"lr_scale_mean": {k: round(v["mean"], 3) for k, v in ck.metrics["lr_scale"].items()}}
                                                   if "lr_scale" in ck.metrics else {})})
            for use_ft, lg in ((False, no_ft), (True, ft)):
                for sl, (a, n) in slice_aucs(te, lg).items():
                    results.setdefault((method, block, use_ft, sl), []).append((a, n))
            progress(f"  {name} seed {seed}: epoch {ck.metrics['best_epoch']}, ft {best}, test AUC "
                     f"{results[(method, block, False, 'all')][-1][0]:.4f} -> "
                     f"{results[(method, block, True, 'all')][-1][0]:.4f} ({time.time() - t_start:.0f}s)")
    rows = [{"method": m, "meta_block": blk, "fine_tune": ft, "slice": sl,
             "auc": float(np.nanmean([a for a, _ in v])), "n_tasks": int(v[0][1])}
            for (m, blk, ft, sl), v in results.items()]
    std = {(m, blk, ft, sl): float(np.nanstd([a for a, _ in v])) for (m, blk, ft, sl), v in results.items()}
    (out / "report.json").write_text(json.dumps(rows, indent=2))
    meta = {"events": len(df), "tasks": int(df["task"].nunique()), "t1": t1, "split": list(split), "seeds": int(seeds),
            "epochs": n_epochs, "grid": grid, "chosen": chosen, "spec": specs["mlp"].to_dict(), "meta_columns": meta_cols,
            "other_columns": other_cols, "seconds": round(time.time() - t_start, 1), "quick": quick,
            "train": {k: getattr(cfg.train, k) for k in ("inner_steps", "task_lr", "first_order", "meta_sgd", "meta_sgd_lr",
                                                           "meta_lr", "tasks_per_batch")}}
    (out / "report.md").write_text(markdown(rows, std, meta))
    plots([r for r in rows if r["meta_block"] == "mlp"], curves, out)
    progress(f"evaluate: wrote {out / 'report.json'}, report.md, plots ({time.time() - t_start:.0f}s)")
    return rows


def fit_and_score(spec: ModelSpec, tc, tr: TaskBatch, vb: TaskBatch, va: dict, te: dict, grid) -> tuple:
    """Train one model, choose its fine-tune per support-size bucket on validation AUC only
    (never test), and score the test tasks: (checkpoint, choice, logits w/o FT, logits w/ FT).
    A task with < 25 support samples may take smaller / fewer steps than one with a long
    history (the daily job knows each task's count)."""
    which = "meta" if tc.mode == "limaml" else "all"
    ck = train(spec, tc, tr, valid=vb, progress=None)
    st, ls = ck.input_stats, ck.lr_scale
    choice = choose(ck.params, spec, va["support"], va["query"], va["n_support"], which=which, stats=st, lr_scale=ls,
                    grid=grid)
    ck.finetune_choice = choice.to_dict()  # what a checkpoint trained by `metaemb train` carries
    no_ft = predict(ck.params, spec, te, 0, 0.0, which, stats=st)
    ft = no_ft.copy()
    bucket = bucket_of(te["n_support"])
    for b in range(len(BUCKETS)):
        steps, lr = choice.of(b)
        ft[bucket == b] = predict(ck.params, spec, te, steps, lr, which, stats=st, lr_scale=ls)[bucket == b]
    best = {name: choice.of(b) for b, name in enumerate(BUCKETS)}
    return ck, best, no_ft, ft


def _concat(ev: dict, keep: np.ndarray, N: int) -> TaskBatch:
    s, q = ev["support"], ev["query"]
    idx = np.flatnonzero(keep)
    ns, nq = s.lengths[idx], np.minimum(q.lengths[idx], N)
    L = int((ns + nq).max()) if len(idx) else 1
    arr = {k: np.zeros((len(idx), L) + getattr(s, k).shape[2:], getattr(s, k).dtype)
           for k in ("x_meta", "x_other", "item_ids", "labels")}
    for j, i in enumerate(idx):
        for k in arr:
            arr[k][j, :ns[j]] = getattr(s, k)[i, :ns[j]]
            arr[k][j, ns[j]:ns[j] + nq[j]] = getattr(q, k)[i, :nq[j]]
    return TaskBatch(lengths=ns + nq, task_ids=s.task_ids[idx], n_support=ns, **arr)
