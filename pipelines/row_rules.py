"""The row-fault rules of the input contract, defined once, and their Arrow evaluator.

A row fault (null key, label outside {0, 1}, NaN/inf context, duplicate or future event) is not
fatal: the daily run quarantines the row and reports the counts. ROW_RULES lists each fault: a
reason, in precedence order (a row gets the first reason that matches), and a predicate written
against a small set of row operations. ArrowRows evaluates them here (`metaemb validate`, no
Spark); pipelines/labeled.py's SparkRows evaluates the very same predicates as Spark Columns.
One clock: "future" means at or after the end of the run date (00:00 UTC the next day). One
tie-break: of duplicate events, the first in ascending order of the row's other columns (file
order; nulls first, NaN after every number, as Spark sorts) is kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import tables

# Row-fault reasons (the quarantine table's `reason`); precedence: ROW_RULES.
NULL_KEY = "null_task_key"
BAD_TIMESTAMP = "null_timestamp"
BAD_LABEL = "label_not_0_1"
NON_FINITE = "nan_or_inf_context"
DUPLICATE = "duplicate_event"
FUTURE = "future_timestamp"



@dataclass(frozen=True)
class RowScope:
    """What the row rules need besides the rows: the columns, the run date and its window."""

    keys: tuple[str, ...]
    context: tuple[str, ...]
    order: tuple[str, ...]  # tie-break among duplicates (order_columns)
    run_date: dt.date
    dates: tuple[dt.date, ...] | None = None  # event dates checked; None = every row of the input

    @property
    def clock(self) -> dt.datetime:
        """The end of the run date: an event at or after it is in the future."""
        return dt.datetime.combine(self.run_date + dt.timedelta(days=1), dt.time(), dt.timezone.utc)

    @property
    def event_key(self) -> tuple[str, ...]:
        return (*self.keys, tables.ITEM_ID, tables.EVENT_TIMESTAMP)


@dataclass(frozen=True)
class RowRule:
    """One row fault: its reason, the columns it reads, and its predicate.

    `matches(rows, scope, clean)` is written once against the row operations that ArrowRows
    (here) and SparkRows (pipelines/labeled.py) both provide; `clean` marks the rows no
    earlier rule matched.
    """

    reason: str
    columns: Callable[[RowScope], tuple[str, ...]]
    matches: Callable[[Any, RowScope, Any], Any]


# In precedence order: a row is quarantined with the first reason that matches. Duplicates
# are looked for among the rows that pass every other rule, so a faulty copy never causes
# its clean twin to be dropped.
ROW_RULES = (
    RowRule(NULL_KEY, lambda s: s.keys, lambda rows, s, clean: rows.any_null(s.keys)),
    RowRule(BAD_TIMESTAMP, lambda s: (tables.EVENT_TIMESTAMP,), lambda rows, s, clean: rows.any_null((tables.EVENT_TIMESTAMP,))),
    RowRule(BAD_LABEL, lambda s: (tables.LABEL,), lambda rows, s, clean: ~rows.one_of(tables.LABEL, (0.0, 1.0))),
    RowRule(NON_FINITE, lambda s: s.context, lambda rows, s, clean: rows.any_non_finite(s.context)),
    RowRule(FUTURE, lambda s: (tables.EVENT_TIMESTAMP,), lambda rows, s, clean: rows.at_or_after(tables.EVENT_TIMESTAMP, s.clock)),
    RowRule(DUPLICATE, lambda s: s.event_key,
            lambda rows, s, clean: rows.repeated(s.event_key, s.order, among=clean)),
)


def in_scope(rows, scope: RowScope):
    """The rows a run for scope.run_date looks at: its window's event dates, and every row
    without a timestamp (no date to place it in). None: every row."""
    if scope.dates is None:
        return None
    return rows.any_null((tables.EVENT_TIMESTAMP,)) | rows.dated_in(tables.EVENT_TIMESTAMP, scope.dates)


def fault_reason(rows, scope: RowScope):
    """Per row, the reason of the first rule that matches, or null: in `rows`' own terms."""
    hits = []
    for rule in ROW_RULES:
        hits.append((rule.reason, rule.matches(rows, scope, rows.none_of([h for _, h in hits]))))
    return rows.first_reason(hits)


def window_dates(run_date: dt.date, days: int) -> list[dt.date]:
    return [run_date - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]



class ArrowRows:
    """The row operations over an Arrow table: each returns a numpy bool array (no nulls)."""

    def __init__(self, table: pa.Table):
        self.table = table

    def _mask(self, values) -> np.ndarray:
        return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)

    def _floats(self, column: str):
        return pc.cast(self.table[column], pa.float64())

    def _any(self, masks) -> np.ndarray:
        out = np.zeros(self.table.num_rows, bool)
        for m in masks:
            out |= m
        return out

    def any_null(self, columns) -> np.ndarray:
        return self._any(self._mask(pc.is_null(self.table[c])) for c in columns)

    def one_of(self, column: str, values) -> np.ndarray:
        return self._mask(pc.is_in(self._floats(column), value_set=pa.array(values, pa.float64())))

    def any_non_finite(self, columns) -> np.ndarray:
        return self._any(~self._mask(pc.is_finite(self._floats(c))) for c in columns)  # null: not finite

    def at_or_after(self, column: str, instant: dt.datetime) -> np.ndarray:
        ts = self.table[column]
        return self._mask(pc.greater_equal(ts, pa.scalar(instant, type=ts.type)))

    def dated_in(self, column: str, dates) -> np.ndarray:
        ts = self.table[column]
        per_day = {"s": 86400, "ms": 86400_000, "us": 86400_000_000, "ns": 86400_000_000_000}[ts.type.unit]
        epoch = dt.date(1970, 1, 1)
        # The UTC date, as Spark's to_date with the session in UTC.
        day = pc.fill_null(pc.cast(ts, pa.int64()), 0).to_numpy() // per_day
        return np.isin(day, [(d - epoch).days for d in dates]) & ~self.any_null((column,))

    def repeated(self, key, order, among: np.ndarray) -> np.ndarray:
        """Rows of `among` whose key an earlier row of `among` has, in the order of `order`."""
        idx = np.flatnonzero(among)
        out = np.zeros(self.table.num_rows, bool)
        if len(idx) < 2:
            return out
        sub = self.table.select([*key, *order]).take(idx)
        sort_cols, sort_keys = {}, []
        for c in key:
            sort_cols[c] = sub[c]
            sort_keys.append((c, "ascending"))
        for i, c in enumerate(order):
            # Spark's ascending order: null, then values, then NaN.
            rank = np.where(self._mask(pc.is_null(sub[c])), 0, 1).astype(np.int8)
            if pa.types.is_floating(sub[c].type):
                rank[self._mask(pc.is_nan(sub[c]))] = 2
            sort_cols[f"_rank{i}"], sort_cols[f"_value{i}"] = pa.array(rank), sub[c]
            sort_keys += [(f"_rank{i}", "ascending"), (f"_value{i}", "ascending")]
        sorted_pos = pc.sort_indices(pa.table(sort_cols), sort_keys=sort_keys).to_numpy()  # stable
        keys_sorted = sub.select(list(key)).take(sorted_pos)
        same = np.ones(len(idx) - 1, bool)
        for c in key:
            a, b = keys_sorted[c].slice(1), keys_sorted[c].slice(0, len(idx) - 1)
            both_null = self._mask(pc.and_(pc.is_null(a), pc.is_null(b)))
            same &= self._mask(pc.equal(a, b)) | both_null
        out[idx[sorted_pos[1:][same]]] = True
        return out

    def none_of(self, masks) -> np.ndarray:
        return ~self._any(masks)

    def first_reason(self, hits) -> np.ndarray:
        out = np.full(self.table.num_rows, None, dtype=object)
        for reason, mask in hits:
            out[mask & np.equal(out, None)] = reason
        return out
