"""MovieLens-100k (RecBole's atomic .inter file) -> the interactions schema of DESIGN.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_inter(inter_path: str | Path) -> pd.DataFrame:
    """Tab-separated, header `user_id:token item_id:token rating:float timestamp:float`."""
    df = pd.read_csv(inter_path, sep="\t")
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(df.columns)
    if missing:
        raise ValueError(f"{inter_path}: missing columns {sorted(missing)} (got {list(df.columns)})")
    return df


def to_interactions(inter_path: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Write user_id, item_id, event_timestamp (UTC), label (rating >= 4 -> 1) as Parquet."""
    df = read_inter(inter_path)
    out = pd.DataFrame({
        "user_id": df["user_id"].astype("int64"),
        "item_id": df["item_id"].astype("int64"),
        "event_timestamp": pd.to_datetime(df["timestamp"].astype("int64"), unit="s", utc=True),
        "label": (df["rating"] >= 4).astype("int64"),
    }).sort_values(["event_timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)
    return out
