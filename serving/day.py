"""One run_date partition of meta_embeddings, streamed: the rows as Arrow batches of [feast]
batch_rows (DayRows), the key checks, the figures of the embeddings, and rows matched by key.

Publish, its gate and check hold one batch at a time, plus the day's keys and row numbers for
joins and the duplicate check (a few bytes a row), never the whole day: their memory stays
flat from 100k to 1M tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import tables
from core.config import Config
from pipelines import lake


class PublishError(RuntimeError):
    """The partition cannot be published (missing, malformed); nothing was written."""


def partition_columns(cfg: Config) -> list[str]:
    return [*cfg.data.task_key, tables.EMBEDDING, tables.N_SAMPLES, tables.MODEL_VERSION,
            tables.EVENT_TIMESTAMP, tables.CREATED_TIMESTAMP]


def read_partition(cfg: Config, run_date: date, columns: list[str] | None = None):
    """The run_date partition of meta_embeddings as one Arrow table (driver side, delta-rs).
    For small reads; publish, its gate and check stream the day (day_rows)."""
    _require_table(cfg)
    return lake.read_day(cfg, tables.META_EMBEDDINGS, run_date, columns or partition_columns(cfg))


def _require_table(cfg: Config) -> None:
    if not lake.table_exists(cfg, tables.META_EMBEDDINGS):
        raise PublishError(f"{cfg.table_location(tables.META_EMBEDDINGS)}: no Delta table meta_embeddings to publish from")


ROW = "_row"  # a row's number within its day, in the order every pass reads the day


@dataclass(frozen=True)
class DayRows:
    """One run_date partition of meta_embeddings, read as Arrow batches as often as a pass
    needs it. Every pass yields the rows in the same order, so a row's number (ROW) names it
    across passes."""
    run_date: date
    scan: Callable[[list[str]], Iterator]  # columns -> pyarrow.RecordBatch stream

    def batches(self, columns: list[str]) -> Iterator:
        return iter(self.scan(columns))

    def keys(self, keys: list[str]):
        """The key columns and ROW, as one Arrow table."""
        parts, at = [], 0
        for batch in self.batches(keys):
            parts.append(pa.Table.from_batches([batch]).append_column(
                ROW, pa.array(np.arange(at, at + batch.num_rows, dtype=np.int64))))
            at += batch.num_rows
        if not parts:
            return pa.table({**{k: pa.array([], pa.string()) for k in keys}, ROW: pa.array([], pa.int64())})
        return pa.concat_tables(parts)

    @classmethod
    def of_table(cls, run_date: date, table, batch_rows: int = 65_536) -> "DayRows":
        """An in-memory table as a DayRows (tests, benches)."""
        return cls(run_date, lambda columns: table.select(columns).to_batches(max_chunksize=batch_rows))


def day_rows(cfg: Config, run_date: date, table=None) -> DayRows:
    """The run_date partition of meta_embeddings, streamed from Delta (or `table`, in memory)."""
    if isinstance(table, DayRows):
        return table
    if table is not None:
        return DayRows.of_table(run_date, table, cfg.feast.batch_rows)
    _require_table(cfg)
    return DayRows(run_date, lambda columns: lake.scan_day(cfg, tables.META_EMBEDDINGS, run_date, columns,
                                                           cfg.feast.batch_rows))


def check_keys(cfg: Config, day: DayRows) -> int:
    """The day's row count; PublishError on a null or duplicate task key."""
    keys = list(cfg.data.task_key)
    key_table = day.keys(keys)
    for k in keys:
        if key_table.column(k).null_count:
            raise PublishError(f"meta_embeddings: {key_table.column(k).null_count} rows with null key {k!r} "
                               f"on {day.run_date}")
    duplicates = duplicate_keys(key_table, keys)
    if duplicates:
        raise PublishError(f"meta_embeddings: duplicate task keys on {day.run_date} ({duplicates})")
    return key_table.num_rows


def duplicate_keys(key_table, keys: list[str]) -> int:
    """Rows whose task key an earlier row already has. Sorted, then neighbours compared: a
    hash group-by over 1M string keys held 160 MB at its peak, the sort 37 MB."""
    if key_table.num_rows < 2:
        return 0
    order = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
    same = None
    for k in keys:
        column = key_table.column(k).take(order)
        equal = pc.equal(column.slice(1), column.slice(0, len(column) - 1))
        same = equal if same is None else pc.and_(same, equal)
    return int(pc.sum(same).as_py() or 0)


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


def day_figures(day: DayRows, dim: int) -> DayFigures:
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


def rows_in_batches(day: DayRows, rows: np.ndarray, dim: int):
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


def gather_rows(day: DayRows, rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [len(rows), dim] float32, ok [len(rows)]) of the day's embeddings at row numbers
    `rows`, streamed; ok: the row's embedding is dim long (its matrix row is 0 otherwise)."""
    increasing = len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())
    wanted, inverse = (rows, None) if increasing else np.unique(rows, return_inverse=True)
    out = np.zeros((len(wanted), dim), dtype=np.float32)
    ok = np.zeros(len(wanted), dtype=bool)
    for lo, good, matrix in rows_in_batches(day, wanted, dim):
        out[lo + good] = matrix
        ok[lo + good] = True
    return (out, ok) if inverse is None else (out[inverse], ok[inverse])
