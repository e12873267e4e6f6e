"""Synthetic interactions with planted per-task preferences (DESIGN.md schema).

Each user u has a latent preference vector p_u; each item i a latent vector q_i and a
popularity bias b_i. P(click) = sigmoid(scale * p_u . q_i + b_i + c). The item vector is
visible to the model as context columns ctx_*, but only half of p_u leaks into the daily
entity-feature snapshots (noisily): the other half can only be learned from the user's own
history, so per-task fine-tuning must measurably help.

Rows are generated user-chunk by user-chunk and streamed to Parquet, so memory stays flat
for millions of users.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LATENT = 8
OBSERVED = 4  # latent components that leak (noisily) into entity features
CONTEXT_COLUMNS = [f"ctx_{j}" for j in range(LATENT)]
FEATURE_COLUMNS = [f"pref_{j}" for j in range(OBSERVED)] + ["tenure_days", "activity_7d", "noise_0", "noise_1"]


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 3000
    items: int = 2000
    days: int = 30
    end_date: dt.date = dt.date(2026, 10, 30)  # last day with events (inclusive)
    mean_events_per_user: float = 30.0
    snapshot_every_days: int = 1
    seed: int = 0
    chunk_users: int = 50_000


def _user_event_counts(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    # Heavy-tailed activity: many light users (< 25 samples) and some heavy ones.
    counts = rng.negative_binomial(2, 2 / (2 + mean), size=n)
    return np.maximum(counts, 1)


def generate(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec(), progress=print) -> dict:
    """Write out_dir/interactions.parquet and out_dir/entity_features.parquet; return row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    item_vec = rng.normal(size=(spec.items, LATENT)).astype(np.float32) / np.sqrt(LATENT)
    item_bias = rng.normal(-0.3, 0.5, size=spec.items).astype(np.float32)
    start = dt.datetime.combine(spec.end_date - dt.timedelta(days=spec.days - 1), dt.time(), dt.timezone.utc)
    start_s = int(start.timestamp())
    snapshot_days = np.arange(0, spec.days, spec.snapshot_every_days)

    inter_path, feat_path = out / "interactions.parquet", out / "entity_features.parquet"
    inter_writer = feat_writer = None
    n_inter = n_feat = 0
    try:
        for lo in range(0, spec.users, spec.chunk_users):
            hi = min(lo + spec.chunk_users, spec.users)
            inter, feats = _chunk(rng, lo, hi, spec, item_vec, item_bias, start_s, snapshot_days)
            if inter_writer is None:
                inter_writer = pq.ParquetWriter(inter_path, inter.schema)
                feat_writer = pq.ParquetWriter(feat_path, feats.schema)
            inter_writer.write_table(inter)
            feat_writer.write_table(feats)
            n_inter += inter.num_rows
            n_feat += feats.num_rows
            if spec.users > spec.chunk_users:
                progress(f"generate: {hi:,}/{spec.users:,} users, {n_inter:,} interactions")
    finally:
        for w in (inter_writer, feat_writer):
            if w is not None:
                w.close()
    return {"interactions": n_inter, "entity_features": n_feat, "users": spec.users,
            "first_date": start.date().isoformat(), "last_date": spec.end_date.isoformat()}


def _chunk(rng, lo, hi, spec, item_vec, item_bias, start_s, snapshot_days):
    n = hi - lo
    user_ids = np.arange(lo, hi, dtype=np.int64) + 1
    pref = rng.normal(size=(n, LATENT)).astype(np.float32)
    signup_day = rng.integers(-200, spec.days // 2, size=n)
    counts = _user_event_counts(rng, n, spec.mean_events_per_user)
    owner = np.repeat(np.arange(n), counts)
    items = rng.integers(0, spec.items, size=owner.size)
    # Events happen after the user's signup (or the window start).
    first_s = start_s + np.maximum(signup_day, 0)[owner] * 86400
    ts = first_s + (rng.random(owner.size) * (start_s + spec.days * 86400 - first_s)).astype(np.int64)
    logit = 3.0 * np.einsum("ij,ij->i", pref[owner], item_vec[items]) + item_bias[items]
    label = (rng.random(owner.size) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    order = np.lexsort((ts, owner))
    owner, items, ts, label = owner[order], items[order], ts[order], label[order]
    inter = pa.table({
        "user_id": user_ids[owner],
        "item_id": items.astype(np.int64),
        "event_timestamp": pa.array(ts * 1_000_000, type=pa.timestamp("us", tz="UTC")),
        "label": label,
        **{c: item_vec[items, j] + rng.normal(0, 0.05, size=owner.size).astype(np.float32)
           for j, c in enumerate(CONTEXT_COLUMNS)},
    })
    # Daily (or every k days) snapshot per user; values change over time so that a
    # point-in-time join that peeks into the future is detectable (tenure, activity).
    day_of_event = ((ts - start_s) // 86400).astype(np.int64)
    rows_u = np.repeat(np.arange(n), len(snapshot_days))
    rows_d = np.tile(snapshot_days, n)
    active = np.zeros((n, spec.days), dtype=np.int32)
    np.add.at(active, (owner, day_of_event), 1)
    # before[u, d] = events of u strictly before day d: a snapshot at 00:00 can't see day d.
    before = np.concatenate([np.zeros((n, 1), np.int32), np.cumsum(active, axis=1)], axis=1)
    last7 = before[rows_u, rows_d] - before[rows_u, np.maximum(rows_d - 7, 0)]
    noisy = pref[rows_u, :OBSERVED] + rng.normal(0, 0.5, size=(rows_u.size, OBSERVED)).astype(np.float32)
    feats = pa.table({
        "user_id": user_ids[rows_u],
        "feature_timestamp": pa.array((start_s + rows_d * 86400) * 1_000_000, type=pa.timestamp("us", tz="UTC")),
        **{f"pref_{j}": noisy[:, j] for j in range(OBSERVED)},
        "tenure_days": (rows_d - signup_day[rows_u]).astype(np.float32),
        "activity_7d": last7.astype(np.float32),
        "noise_0": rng.normal(size=rows_u.size).astype(np.float32),
        "noise_1": rng.normal(size=rows_u.size).astype(np.float32),
    })
    return inter, feats
