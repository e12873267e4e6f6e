"""Publish stage: gate the run_date's embeddings, push them to Feast's online store, log it.

    publish(cfg, run_date) -> PublishResult          (no Spark: delta-rs reads, numpy figures)
        1. check_gate(): one model version in the partition, NaN/inf, empty day, row count vs
           the previous published day, mean embedding norm, and day-over-day mean cosine
           drift on common keys when that day has the same model version (a version switch
           skips drift: two models' embeddings are not comparable). A failure raises
           GateError (with every figure) before the online store is touched; the attempt is
           logged with status "blocked".
        2. A run_date older than the newest day the registry says is online is not pushed
           (it would overwrite newer embeddings); logged as "skipped".
        3. feast_store.write_partition(method = cfg.feast.publish_method):
           "fast" writes the whole day in one online-store transaction (SQLite BEGIN..COMMIT
           in WAL mode / Redis MULTI..EXEC) and then records the interval in Feast's
           registry, so a kill -9 at any moment leaves the previous complete day served.
           "materialize" is Feast's stock path (batched, not atomic across batches).
           A model version switch (the day's version differs from the one served) replaces
           the online store's rows in that same transaction, so no task keeps an embedding of
           the previous version (docs/design.md, "Model version rollout").
        4. One row appended (delta-rs) to the Delta table publish_log (run_date, rows, method,
           seconds, gate figures, status, model_version, switched_from).

Re-publishing a date overwrites the same keys with the same values: idempotent.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import tables
from core.config import Config
from pipelines import delta_tables
from serving import feast_store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """The day failed the publish gate; .report holds the figures. Nothing was published."""

    def __init__(self, message: str, report: "GateReport"):
        super().__init__(message)
        self.report = report


@dataclass
class GateReport:
    run_date: date
    rows: int
    nan_inf_rows: int = 0
    bad_length_rows: int = 0
    mean_norm: float = float("nan")
    prev_run_date: date | None = None
    prev_rows: int | None = None
    row_ratio: float | None = None
    common_keys: int = 0
    mean_cosine: float | None = None
    mean_drift: float | None = None
    model_version: str = ""
    prev_version: str | None = None  # of prev_run_date; drift is compared only when it equals model_version
    read_s: float = 0.0  # one streamed read of the day's embeddings (the figures' pass)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def figures(self) -> str:
        parts = [f"rows={self.rows}", f"nan_inf_rows={self.nan_inf_rows}",
                 f"bad_length_rows={self.bad_length_rows}", f"mean_norm={self.mean_norm:.4g}"]
        if self.prev_run_date is not None:
            parts += [f"prev_run_date={self.prev_run_date}", f"prev_rows={self.prev_rows}",
                      f"row_ratio={self.row_ratio:.4g}", f"common_keys={self.common_keys}"]
            if self.mean_drift is not None:
                parts.append(f"mean_drift={self.mean_drift:.4g}")
            if self.version_switch:
                parts.append(f"model_version={self.model_version} (prev {self.prev_version}: drift not compared)")
        return ", ".join(parts)

    @property
    def version_switch(self) -> bool:
        return self.prev_version is not None and self.prev_version != self.model_version


@dataclass
class PublishResult:
    run_date: date
    rows: int
    seconds: float
    method: str
    online_store: str
    status: str  # published | skipped
    gate: GateReport | None = None
    read_s: float = 0.0  # one streamed read of the day (the gate's figures pass; 0 without the gate)
    switched_from: str | None = None  # the model version served before, when this publish changed it
    model_version: str = ""


# ---------------------------------------------------------------------- publish_log

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
    # Added after the first release: older logs get it on their next append (schema merge).
    ("switched_from", pa.string()),
])


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def log_publish(cfg: Config, run_date: date, *, status: str, method: str, rows: int,
                seconds: float, gate: GateReport | None, message: str = "", model_version: str | None = None,
                switched_from: str | None = None) -> None:
    """Append one row to publish_log (delta-rs: the table's only writer)."""
    g = gate or GateReport(run_date=run_date, rows=rows)
    row = (run_date, datetime.now(timezone.utc), status, method, cfg.feast.online_store, int(rows),
           float(seconds), int(g.nan_inf_rows), _finite(float(g.mean_norm)), g.prev_run_date, g.prev_rows,
           _finite(g.row_ratio), int(g.common_keys), _finite(g.mean_drift), model_version or g.model_version or None,
           message[:2000], switched_from)
    table = pa.Table.from_pylist([dict(zip(LOG_SCHEMA.names, row))], schema=LOG_SCHEMA)
    delta_tables.append(cfg.table_location(tables.PUBLISH_LOG), table)


def publish_log(cfg: Config, columns: list[str] | None = None):
    """The publish_log table as pandas, oldest first (None when nothing was ever published).
    A column that an older log lacks (added since) reads as null."""
    path = cfg.table_location(tables.PUBLISH_LOG)
    if not delta_tables.exists(path):
        return None
    present = set(delta_tables.schema(path).names)
    df = delta_tables.read(path, [c for c in columns if c in present] if columns else None).to_pandas()
    for name in (columns or LOG_SCHEMA.names):
        if name not in df.columns:
            df[name] = None
    return df.sort_values("logged_at", kind="stable")


class Published(NamedTuple):
    run_date: date
    rows: int
    model_version: str | None  # None: logged without one (publish with skip_gate)
    logged_at: datetime | None = None


def _published(cfg: Config) -> "pd.DataFrame | None":
    df = publish_log(cfg, ["run_date", "logged_at", "status", "rows", "model_version"])
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
        raise feast_store.PublishError(f"publish of {run_date} was blocked by the gate: {message}")
    newest = feast_store.latest_materialized(store or feast_store.feature_store(cfg))
    served = feast_store.served_day(newest) if newest is not None else None
    if served is None or served < run_date:
        raise feast_store.PublishError(
            f"publish_log says {status} for {run_date}, but the online store serves "
            f"{served or 'nothing'}: rerun the publish stage for {run_date}")
    return Outcome(run_date, status, served)


# ---------------------------------------------------------------------------- gate


@dataclass
class Embeddings:
    """One batch's embedding column, row-wise figures in numpy (float64)."""
    null: np.ndarray  # [n] bool: no embedding
    non_finite: np.ndarray  # [n] bool: some element NaN/inf/null
    length: np.ndarray  # [n] int: elements per row (-1 when null)
    squares: np.ndarray  # [n] sum of squared elements
    values: np.ndarray  # flattened elements

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> "Embeddings":
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        n = len(col)
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
        parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        non_finite = np.zeros(n, dtype=bool)
        non_finite[parents[~np.isfinite(values)]] = True
        return cls(null=col.is_null().to_numpy(zero_copy_only=False), non_finite=non_finite,
                   length=pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False),
                   squares=np.bincount(parents, weights=np.where(np.isfinite(values), values, 0.0) ** 2, minlength=n),
                   values=values)

    def matrix(self, rows: np.ndarray, dim: int) -> np.ndarray:
        """[len(rows), dim] of rows that each hold exactly dim elements."""
        starts = np.concatenate([[0], np.cumsum(np.maximum(self.length, 0))])[rows]
        return self.values[starts[:, None] + np.arange(dim)]


@dataclass
class DayFigures:
    """Row-wise figures of a day's embeddings, summed over its batches."""
    rows: int = 0
    nan_inf_rows: int = 0  # null, or some element NaN/inf/null
    bad_length_rows: int = 0  # not null, not dim long
    norm_sum: float = 0.0  # over usable rows (not null, all finite)
    usable_rows: int = 0
    versions: set = field(default_factory=set)  # distinct model versions

    @property
    def mean_norm(self) -> float:
        return self.norm_sum / self.usable_rows if self.usable_rows else float("nan")


def day_figures(day: feast_store.DayRows, dim: int) -> DayFigures:
    """DayFigures of a day, streamed: one batch in memory at a time."""
    f = DayFigures()
    for batch in day.batches([tables.EMBEDDING, tables.MODEL_VERSION]):
        emb = Embeddings.of(batch.column(tables.EMBEDDING))
        bad = emb.null | emb.non_finite
        f.rows += batch.num_rows
        f.nan_inf_rows += int(bad.sum())
        f.bad_length_rows += int((~emb.null & (emb.length != dim)).sum())
        f.norm_sum += float(np.sqrt(emb.squares[~bad]).sum())
        f.usable_rows += int((~bad).sum())
        f.versions.update(v for v in pc.unique(batch.column(tables.MODEL_VERSION)).to_pylist() if v is not None)
    return f


def key_column(key_table: pa.Table, keys: list[str]) -> pa.Array:
    """One string per row that identifies its task key. Several key columns are joined with
    each value's length in front ("3:abc:2:xy"), so two different keys never join alike."""
    if len(keys) == 1:
        return key_table.column(keys[0]).combine_chunks()
    parts = []
    for k in keys:
        column = key_table.column(k).cast(pa.string())
        parts += [pc.utf8_length(column).cast(pa.string()), column]
    return pc.binary_join_element_wise(*parts, ":").combine_chunks()


def matching_rows(left: pa.Table, right: pa.Table, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j), i increasing, of every left row i whose keys right's row j has
    (right's keys unique). index_in (a hash set of right's keys) rather than a join: at 1M
    keys a side its peak was 66 MB, the join's 171 MB."""
    found = pc.index_in(key_column(left, keys), value_set=key_column(right, keys))
    i = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
    return i, found.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)


def _rows_in_batches(day: feast_store.DayRows, rows: np.ndarray, dim: int):
    """Stream the day's embeddings past the row numbers `rows` (increasing): per batch that
    holds some, (lo, good, matrix): rows[lo + good] are those whose embedding is dim long,
    matrix [len(good), dim] float64 their vectors."""
    at = 0
    for batch in day.batches([tables.EMBEDDING]):
        lo, hi = np.searchsorted(rows, [at, at + batch.num_rows])
        if hi > lo:
            emb = Embeddings.of(batch.column(tables.EMBEDDING).take(pa.array(rows[lo:hi] - at)))
            good = np.flatnonzero(emb.length == dim)
            yield lo, good, emb.matrix(good, dim)
        at += batch.num_rows


def gather_rows(day: feast_store.DayRows, rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [len(rows), dim] float32, ok [len(rows)]) of the day's embeddings at row numbers
    `rows`, streamed; ok: the row's embedding is dim long (its matrix row is 0 otherwise)."""
    increasing = len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())
    wanted, inverse = (rows, None) if increasing else np.unique(rows, return_inverse=True)
    out = np.zeros((len(wanted), dim), dtype=np.float32)
    ok = np.zeros(len(wanted), dtype=bool)
    for lo, good, matrix in _rows_in_batches(day, wanted, dim):
        out[lo + good] = matrix
        ok[lo + good] = True
    return (out, ok) if inverse is None else (out[inverse], ok[inverse])


def _mean_cosine(keys: list[str], today: feast_store.DayRows, before: feast_store.DayRows, dim: int,
                 span: int) -> tuple[int, float | None]:
    """(common keys, mean cosine over those whose both vectors are non-zero) of two days.

    Matched through the days' keys and row numbers (row numbers are positions, so today's
    come out increasing). For `span` pairs at a time, today's vectors are gathered (float32,
    one pass over today) and the day before is streamed past them (one pass), so memory is
    bounded by span, not by the days."""
    ia, ib = matching_rows(today.keys(keys), before.keys(keys), keys)
    total, counted = 0.0, 0
    for lo in range(0, len(ia), span):
        a, a_ok = gather_rows(today, ia[lo: lo + span], dim)
        order = np.argsort(ib[lo: lo + span], kind="stable")
        for first, good, vb in _rows_in_batches(before, ib[lo: lo + span][order], dim):
            pos = order[first + good]
            va = a[pos].astype(np.float64)
            na, nb = np.sqrt((va * va).sum(1)), np.sqrt((vb * vb).sum(1))
            use = a_ok[pos] & (na > 0) & (nb > 0)
            total += float(((va[use] * vb[use]).sum(1) / (na[use] * nb[use])).sum())
            counted += int(use.sum())
    return len(ia), (total / counted if counted else None)


def check_gate(cfg: Config, run_date: date, today=None, *, raise_on_failure: bool = True) -> GateReport:
    """Figures of the run_date partition vs the previous published day; GateError if out of bounds.

    today: the day's rows (feast_store.DayRows, or an Arrow table in memory); None streams
    them from Delta. Every figure is computed batch by batch (feast_store.DayRows)."""
    day = feast_store.day_rows(cfg, run_date, today)
    dim, g = cfg.model.embedding_dim, cfg.gate
    t = time.perf_counter()
    fig = day_figures(day, dim)
    read_s = time.perf_counter() - t
    versions = sorted(fig.versions)
    rep = GateReport(run_date=run_date, rows=fig.rows, nan_inf_rows=fig.nan_inf_rows,
                     bad_length_rows=fig.bad_length_rows, mean_norm=fig.mean_norm, model_version=",".join(versions),
                     read_s=read_s)
    if rep.rows == 0:
        rep.failures.append("no rows for this run_date (empty day)")
    if len(versions) > 1:
        rep.failures.append(f"the partition holds {len(versions)} model versions ({', '.join(versions)}); an online "
                            f"reader must see one per day: rerun `metaemb run --date {run_date} --stages "
                            "embed,publish,check` (embed writes the whole date with one checkpoint)")
    if rep.nan_inf_rows:
        rep.failures.append(f"{rep.nan_inf_rows} embeddings are null or hold NaN/inf")
    if rep.bad_length_rows:
        rep.failures.append(f"{rep.bad_length_rows} embeddings are not {dim} long")
    if rep.rows and not (g.min_mean_norm <= rep.mean_norm <= g.max_mean_norm):
        rep.failures.append(f"mean embedding norm {rep.mean_norm:.4g} outside "
                            f"[{g.min_mean_norm:g}, {g.max_mean_norm:g}]")

    prev = previous_published(cfg, run_date)
    if prev is not None and rep.rows:
        rep.prev_run_date, rep.prev_rows = prev.run_date, prev.rows
        rep.prev_version = prev.model_version  # None (logged without one): compared as before
        rep.row_ratio = rep.rows / rep.prev_rows if rep.prev_rows else float("inf")
        if not (g.min_row_ratio <= rep.row_ratio <= g.max_row_ratio):
            rep.failures.append(
                f"row count {rep.rows} vs {rep.prev_rows} on {rep.prev_run_date}: ratio "
                f"{rep.row_ratio:.4g} outside [{g.min_row_ratio:g}, {g.max_row_ratio:g}]")
        if not rep.nan_inf_rows and not rep.bad_length_rows and not rep.version_switch:
            before = feast_store.day_rows(cfg, rep.prev_run_date)
            rep.common_keys, rep.mean_cosine = _mean_cosine(list(cfg.data.task_key), day, before, dim,
                                                            span=4 * cfg.feast.batch_rows)
            if rep.common_keys and rep.mean_cosine is not None:
                rep.mean_drift = 1.0 - rep.mean_cosine
                if rep.mean_drift > g.max_mean_drift:
                    rep.failures.append(
                        f"day-over-day drift 1 - mean cosine = {rep.mean_drift:.4g} over "
                        f"{rep.common_keys} common keys > max_mean_drift {g.max_mean_drift:g}")
    if rep.failures and raise_on_failure:
        raise GateError(
            f"publish gate blocked run_date {run_date}: " + "; ".join(rep.failures)
            + f" [{rep.figures()}]", rep)
    return rep


# -------------------------------------------------------------------------- publish


def publish(cfg: Config, run_date: date, *, method: str | None = None, skip_gate: bool = False) -> PublishResult:
    """Gate, then push the run_date partition of meta_embeddings to the online store, then log."""
    method = method or cfg.feast.publish_method
    t0 = time.perf_counter()
    gate = None
    today = feast_store.day_rows(cfg, run_date)
    if not skip_gate:
        try:
            gate = check_gate(cfg, run_date, today)
        except GateError as e:
            log_publish(cfg, run_date, status="blocked", method=method, rows=e.report.rows,
                        seconds=time.perf_counter() - t0, gate=e.report, message=str(e))
            log.error("%s", e)
            raise
        log.info("gate passed for %s: %s", run_date, gate.figures())
    read_s = gate.read_s if gate else 0.0
    store = feast_store.feature_store(cfg)
    try:
        store.get_feature_view(feast_store.FEATURE_VIEW)
    except Exception:  # first publish into this registry
        feast_store.apply(cfg, store)
    start, end = feast_store.day_interval(run_date)
    newest = feast_store.latest_materialized(store)
    if newest is not None and newest > end:
        msg = (f"{written_not_served(feast_store.served_day(newest))}: {run_date} not pushed online, "
               f"the online store already serves a newer day (materialized up to {newest.isoformat()})")
        log.warning("%s", msg)
        log_publish(cfg, run_date, status="skipped", method=method, rows=0,
                    seconds=time.perf_counter() - t0, gate=gate, message=msg)
        return PublishResult(run_date, 0, time.perf_counter() - t0, method, cfg.feast.online_store,
                             "skipped", gate, read_s)
    version = gate.model_version if gate else ",".join(sorted(day_figures(today, cfg.model.embedding_dim).versions))
    now = served(cfg)
    switched_from = now.model_version if now and now.model_version and now.model_version != version else None
    if switched_from:
        log.warning("model version switch on %s: %s -> %s (the online store is replaced with this day's rows)",
                    run_date, switched_from, version)
    res = feast_store.write_partition(cfg, run_date, method, store=store, table=today,
                                      replace_all=switched_from is not None)
    rows = res.rows if res.rows >= 0 else (gate.rows if gate else -1)
    log_publish(cfg, run_date, status="published", method=method, rows=rows, seconds=res.seconds, gate=gate,
                model_version=version, switched_from=switched_from)
    return PublishResult(run_date, rows, res.seconds, method, cfg.feast.online_store, "published", gate, read_s,
                         switched_from, version)


def result_dict(res: PublishResult) -> dict:
    d = asdict(res)
    d["run_date"] = res.run_date.isoformat()
    if res.gate is not None:
        d["gate"]["run_date"] = res.gate.run_date.isoformat()
        if res.gate.prev_run_date:
            d["gate"]["prev_run_date"] = res.gate.prev_run_date.isoformat()
    return d
