"""publish_log: one row per publish attempt (published | blocked | skipped) with the gate's
figures, appended by delta-rs (the table's only writer); what it says was pushed, and what the
online store serves now."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa

from core import tables
from core.config import Config
from pipelines import delta_tables
from serving import feast_repo, slots
from serving.day import PublishError

if TYPE_CHECKING:
    import pandas as pd


LOG_SCHEMA = pa.schema([
    ("run_date", pa.date32(), False),
    ("logged_at", pa.timestamp("us", tz="UTC"), False),
    ("status", pa.string(), False),  # published | blocked | skipped
    ("method", pa.string(), False),
    ("online_store", pa.string(), False),
    ("rows", pa.int64(), False),
    ("seconds", pa.float64(), False),
    ("nan_inf_rows", pa.int64()),
    ("mean_norm", pa.float64()),
    ("prev_run_date", pa.date32()),
    ("prev_rows", pa.int64()),
    ("row_ratio", pa.float64()),
    ("common_keys", pa.int64()),
    ("mean_drift", pa.float64()),
    ("model_version", pa.string()),
    ("message", pa.string()),
    # The version served before this publish, when it differed (a rollout or a rollback).
    ("switched_from", pa.string()),
    ("online_view", pa.string()),  # the feature view (namespace) a published day went into
])


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def log_publish(cfg: Config, run_date: date, *, status: str, method: str, rows: int, seconds: float, gate=None,
                message: str = "", model_version: str | None = None, switched_from: str | None = None,
                view: str | None = None) -> None:
    """Append one row to publish_log. gate: the serving.gate.GateReport of this attempt (None: ungated)."""
    g = gate
    row = {"run_date": run_date, "logged_at": datetime.now(timezone.utc), "status": status, "method": method,
           "online_store": cfg.feast.online_store, "rows": int(rows), "seconds": float(seconds),
           "nan_inf_rows": int(g.nan_inf_rows) if g else 0, "mean_norm": _finite(float(g.mean_norm)) if g else None,
           "prev_run_date": g.prev_run_date if g else None, "prev_rows": g.prev_rows if g else None,
           "row_ratio": _finite(g.row_ratio) if g else None, "common_keys": int(g.common_keys) if g else 0,
           "mean_drift": _finite(g.mean_drift) if g else None,
           "model_version": model_version or (g.model_version if g else "") or None,
           "message": message[:2000], "switched_from": switched_from, "online_view": view}
    delta_tables.append(cfg.table_location(tables.PUBLISH_LOG), pa.Table.from_pylist([row], schema=LOG_SCHEMA))


def publish_log(cfg: Config, columns: list[str] | None = None):
    """The publish_log table as pandas, oldest first (None when nothing was ever published)."""
    path = cfg.table_location(tables.PUBLISH_LOG)
    if not delta_tables.exists(path):
        return None
    return delta_tables.read(path, columns).to_pandas().sort_values("logged_at", kind="stable")


class Published(NamedTuple):
    run_date: date
    rows: int
    model_version: str | None  # None: logged without one (publish with skip_gate)
    logged_at: datetime | None = None


def _published(cfg: Config, more: list[str] = ()) -> "pd.DataFrame | None":
    df = publish_log(cfg, ["run_date", "logged_at", "status", "rows", "model_version", *more])
    return None if df is None else df[df["status"] == "published"]


def _as_published(row) -> Published:
    return Published(row.run_date, int(row.rows), row.model_version or None, row.logged_at)


def previous_published(cfg: Config, run_date: date) -> Published | None:
    """The newest day before run_date that was published (its latest publish)."""
    df = _published(cfg)
    if df is None:
        return None
    df = df[df["run_date"] < run_date].sort_values(["run_date", "logged_at"], kind="stable")
    return _as_published(df.iloc[-1]) if len(df) else None


def served(cfg: Config) -> Published | None:
    """What the online store serves: the latest publish (by time; an older date is never
    pushed over a newer one, so the latest push is the newest day, or its rollback)."""
    df = _published(cfg)
    return _as_published(df.iloc[-1]) if df is not None and len(df) else None


def written_not_served(served: date) -> str:
    """How publish_log, check and status say that a day went to Delta but not online."""
    return f"written; online serves {served}"


@dataclass
class Outcome:
    """What publishing left online for a run_date: the day the online store serves now."""
    run_date: date
    status: str  # the latest publish_log status of run_date: published | skipped
    served_date: date

    def describe(self) -> str:
        if self.served_date == self.run_date:
            return f"published; online serves {self.run_date}"
        return written_not_served(self.served_date)


def latest_outcome(cfg: Config, run_date: date, store=None) -> Outcome | None:
    """The run_date's latest publish_log status and the day the online store serves now.

    None when publish never ran for run_date. A blocked or never-pushed day raises
    PublishError: check has nothing consistent to verify then.
    """
    df = publish_log(cfg, ["run_date", "logged_at", "status", "message"])
    rows = None if df is None else df[df["run_date"] == run_date]
    if rows is None or not len(rows):
        return None
    status, message = rows["status"].iloc[-1], rows["message"].iloc[-1]
    if status == "blocked":
        raise PublishError(f"publish of {run_date} was blocked by the gate: {message}")
    store = store or feast_repo.feature_store(cfg)
    served = slots.served_day(store)
    if served is None or served < run_date:
        raise PublishError(
            f"publish_log says {status} for {run_date}, but the online store serves "
            f"{served or 'nothing'}: rerun the publish stage for {run_date}")
    last, now = last_view(cfg), slots.served_view(store)
    if last and last != now:
        raise PublishError(f"the feature service names {now}, but the last publish switched readers to {last} "
                           "(was `feast apply` run by hand? it declares the first view): run `metaemb apply`, "
                           "which points the service at the view of the last publish")
    return Outcome(run_date, status, served)


def last_view(cfg: Config) -> str | None:
    """The feature view the latest publish switched the readers to (None: never published)."""
    df = _published(cfg, ["online_view"])
    return (df["online_view"].iloc[-1] or None) if df is not None and len(df) else None
