"""The input data contract (DESIGN.md), checked without Spark.

Two kinds of fault:
- schema faults (missing column, wrong type, unreadable file, timestamp without time zone):
  fatal; reported before any Spark work, one line each naming file and column;
- row faults (null key, label outside {0, 1}, NaN/inf, duplicate or future events): the
  daily run quarantines those rows and reports the counts.

The row-fault rules are defined once, in ROW_RULES: a reason, in precedence order (a row gets
the first reason that matches), and a predicate written against a small set of row
operations. ArrowRows evaluates them here (`metaemb validate`, no Spark); pipelines/labeled.py
evaluates the very same predicates as Spark Columns. One clock: "future" means at or after
the end of the run date (00:00 UTC the next day). One tie-break: of duplicate events, the
first in ascending order of the row's other columns (file order; nulls first, NaN after
every number, as Spark sorts) is kept.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from core import tables
from core.config import Config
from core.storage import Location, as_location
from pipelines import delta_tables

# Row-fault reasons (the quarantine table's `reason`); precedence: ROW_RULES.
NULL_KEY = "null_task_key"
BAD_TIMESTAMP = "null_timestamp"
BAD_LABEL = "label_not_0_1"
NON_FINITE = "nan_or_inf_context"
DUPLICATE = "duplicate_event"
FUTURE = "future_timestamp"


class InputError(ValueError):
    """Input that the pipeline cannot use; str() has one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class RowFault:
    reason: str
    column: str
    count: int
    first_rows: list[int]


@dataclass
class InputReport:
    path: str
    rows: int = 0
    problems: list[str] = field(default_factory=list)  # fatal
    row_faults: list[RowFault] = field(default_factory=list)  # quarantined by a run
    ignored_columns: list[str] = field(default_factory=list)
    used_columns: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # not fatal, worth saying

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = list(self.problems) + list(self.notes)
        for f in self.row_faults:
            out.append(f"{self.path}: column '{f.column}': {f.count} rows {f.reason} (first rows: "
                       f"{', '.join(map(str, f.first_rows))}) -> quarantined by a run")
        if self.ignored_columns:
            out.append(f"{self.path}: ignored columns (not numeric or not configured): {', '.join(self.ignored_columns)}")
        return out


def input_format(where: Location) -> str:
    where = as_location(where)
    if where.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if where.suffix.lower() == ".parquet" or not where.is_dir():
        return "parquet"
    names = [c.name for c in where.children()]
    if "_delta_log" in names:
        return "delta"
    return "csv" if any(n.lower().endswith(".csv") for n in names) else "parquet"


def _dataset(where: Location, fmt: str):
    fs, path = as_location(where).filesystem()
    return pads.dataset(path, filesystem=fs, format=pads.CsvFileFormat(convert_options=CSV_CONVERT)
                        if fmt == "csv" else "parquet")


# As Spark reads CSV: only an empty field is null ("NaN" is a float, "NA" a string).
CSV_CONVERT = pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True)


def file_schema(where: Location) -> pa.Schema:
    """The schema as stored (read_schema: as the pipeline reads it)."""
    fmt = input_format(where)
    if fmt == "delta":
        return delta_tables.schema(where)
    return _dataset(where, fmt).schema


def nanosecond_columns(schema: pa.Schema) -> list[str]:
    """Timestamp columns in nanoseconds (pandas' default), which Spark does not read as timestamps."""
    return [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]


def _as_read(schema: pa.Schema) -> pa.Schema:
    """The schema the pipeline works with: nanosecond timestamps become microseconds (as in Spark)."""
    return pa.schema([f.with_type(pa.timestamp("us", f.type.tz)) if f.name in nanosecond_columns(schema) else f
                      for f in schema])


def read_schema(path: Location) -> pa.Schema:
    return _as_read(file_schema(path))


def read_table(path: Location, columns: list[str]) -> pa.Table:
    """The columns as the pipeline sees them: typed as read_schema says (ns -> us, Delta's types)."""
    fmt = input_format(path)
    if fmt == "delta":
        table = delta_tables.read(path, columns)
    else:
        table = _dataset(path, fmt).to_table(columns=columns)
    schema = read_schema(path)
    target = pa.schema([schema.field(c) for c in columns])
    # safe=False: sub-microsecond digits are dropped, as Spark's conversion drops them.
    return table.cast(target, safe=False)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp" if t.tz else "timestamp_naive"
    if pa.types.is_date(t):
        return "date"
    return str(t)


def _missing(report: InputReport, schema: pa.Schema, column: str, role: str) -> bool:
    if column in schema.names:
        return False
    hint = difflib.get_close_matches(column, schema.names, n=1)
    report.problems.append(f"{report.path}: column '{column}' ({role}) is missing"
                           + (f"; did you mean '{hint[0]}' (renamed?)" if hint else "")
                           + f"; columns present: {', '.join(schema.names)}")
    return True


def _expect(report: InputReport, schema: pa.Schema, column: str, allowed: set[str], what: str) -> None:
    kind = _kind(schema.field(column).type)
    if kind == "timestamp_naive" and "timestamp" in allowed:
        report.problems.append(f"{report.path}: column '{column}': timestamp without time zone "
                               f"({schema.field(column).type}); write UTC timestamps (tz-aware, or ISO-8601 with 'Z')")
    elif kind not in allowed:
        report.problems.append(f"{report.path}: column '{column}': type {schema.field(column).type}, expected {what}")


NUMERIC = {"int", "float", "bool"}
KEY_KINDS = {"int", "string"}


def _numeric_columns(schema: pa.Schema, reserved: set[str], configured: list[str], report: InputReport,
                     role: str) -> list[str]:
    if configured:
        cols = [c for c in configured if not _missing(report, schema, c, role)]
        for c in cols:
            _expect(report, schema, c, NUMERIC, "a number")
        return cols
    cols = [f.name for f in schema if f.name not in reserved and _kind(f.type) in NUMERIC]
    report.ignored_columns = [f.name for f in schema if f.name not in reserved and f.name not in cols]
    return cols


def _check_columns(cfg: Config, path: Location, required: list[tuple[str, str, set[str], str]],
                   numeric_role: str, configured: list[str]) -> tuple[InputReport, list[str]]:
    """Shared schema check: task keys + `required` (column, role, kinds, expected) + numeric columns."""
    report = InputReport(str(path))
    try:
        schema = read_schema(path)
    except (OSError, pa.ArrowInvalid, ValueError) as e:
        report.problems.append(f"{path}: unreadable as {input_format(path)}: {e}")
        return report, []
    keys = [(k, "task key", KEY_KINDS, "an integer or string task key") for k in cfg.data.task_key]
    for column, role, kinds, expected in keys + required:
        if not _missing(report, schema, column, role):
            _expect(report, schema, column, kinds, expected)
    reserved = {*cfg.data.task_key, *(c for c, *_ in required)}
    return report, _numeric_columns(schema, reserved, configured, report, numeric_role)


def check_interactions_schema(cfg: Config, path: Location) -> InputReport:
    report, context = _check_columns(cfg, path, [
        (tables.ITEM_ID, "item id", KEY_KINDS, "an integer or string id"),
        (tables.EVENT_TIMESTAMP, "event time", {"timestamp"}, "a timestamp with time zone"),
        (tables.LABEL, "label", NUMERIC, "0/1 (integer, boolean or float)"),
    ], "context", cfg.data.context_columns)
    report.used_columns["context"] = context
    return report


def check_features_schema(cfg: Config, path: Location) -> InputReport:
    report, meta = _check_columns(cfg, path, [
        (tables.FEATURE_TIMESTAMP, "snapshot time", {"timestamp"}, "a timestamp with time zone"),
    ], "meta feature", cfg.data.meta_feature_columns)
    report.used_columns["meta"] = meta
    if not meta and not report.problems:
        report.problems.append(f"{path}: no numeric feature columns besides keys and {tables.FEATURE_TIMESTAMP}")
    return report


# --- row faults: one table of rules, two evaluators ----------------------------------------

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
ROW_FAULTS = tuple(r.reason for r in ROW_RULES)


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


ORDERABLE = {"bool", "int", "float", "string", "timestamp", "timestamp_naive", "date"}


def order_columns(schema: pa.Schema, keys: list[str]) -> tuple[str, ...]:
    """The tie-break for duplicates: every other column that sorts the same way in Arrow and
    Spark (numbers, booleans, strings, dates, timestamps), in file order."""
    event_key = {*keys, tables.ITEM_ID, tables.EVENT_TIMESTAMP}
    return tuple(f.name for f in schema if f.name not in event_key and _kind(f.type) in ORDERABLE)


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


def row_scope(cfg: Config, context: list[str], schema: pa.Schema, run_date: dt.date | None = None,
              window_days: int | None = None) -> RowScope:
    """The scope `validate` checks: without a run date, every row with today's end (UTC) as the
    clock; with one, the window a first run for that date computes (its window_days days)."""
    keys = list(cfg.data.task_key)
    dates = None
    if run_date is not None:
        dates = tuple(window_dates(run_date, window_days or cfg.pipeline.window_days))
    return RowScope(tuple(keys), tuple(context), order_columns(schema, keys),
                    run_date or dt.datetime.now(dt.timezone.utc).date(), dates)


def row_reasons(path: Location, scope: RowScope) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows in the input, row numbers checked, their fault reason or None), like a run would."""
    columns = list(dict.fromkeys([*scope.event_key, tables.LABEL, *scope.context, *scope.order]))
    table = read_table(path, columns)
    total, checked = table.num_rows, np.arange(table.num_rows)
    keep = in_scope(ArrowRows(table), scope)
    if keep is not None:
        checked = checked[keep]
        table = table.take(checked)
    return total, checked, fault_reason(ArrowRows(table), scope)


def _first(rows: np.ndarray, n: int = 5) -> list[int]:
    return rows[:n].tolist()


def count_row_faults(cfg: Config, report: InputReport, path: Location, run_date: dt.date | None = None,
                     window_days: int | None = None) -> None:
    """Count the rows a run would quarantine, by reason (reads the columns the rules need)."""
    scope = row_scope(cfg, report.used_columns.get("context", []), read_schema(path), run_date, window_days)
    total, checked, reasons = row_reasons(path, scope)
    report.rows = total
    if total == 0:
        report.problems.append(f"{path}: 0 rows")
        return
    if scope.dates is not None:
        report.notes.append(f"{path}: {len(checked):,} of {total:,} rows in the window of run date "
                            f"{scope.run_date} ({scope.dates[0]} .. {scope.dates[-1]})")
    for rule in ROW_RULES:
        hit = checked[reasons == rule.reason]
        if len(hit):
            report.row_faults.append(RowFault(rule.reason, ",".join(rule.columns(scope)), len(hit), _first(hit)))
    if len(checked) and all(r is not None for r in reasons):
        report.problems.append(f"{path}: all {len(checked)} rows checked have row faults; nothing usable")


def validate_inputs(cfg: Config, interactions: Location, features: Location | None, *, rows: bool = True,
                    run_date: dt.date | None = None, window_days: int | None = None) -> list[InputReport]:
    """Check the inputs against the contract; rows=False checks schemas only (cheap).

    Row faults are counted over the whole input, or, given run_date, over the window a run
    for that date computes (window_days, default [pipeline] window_days). An input that cannot
    be reached (object store down, refused keys) raises StorageError: no fault of the data, so
    not reported as one (a retry may mend it).
    """
    interactions, features = as_location(interactions), features and as_location(features)
    reports = []
    if not interactions.exists():
        reports.append(InputReport(str(interactions), problems=[f"{interactions}: file not found (interactions)"]))
    else:
        r = check_interactions_schema(cfg, interactions)
        if rows and r.ok:
            try:
                count_row_faults(cfg, r, interactions, run_date, window_days)
            except (OSError, pa.ArrowInvalid) as e:
                r.problems.append(f"{interactions}: unreadable: {e}")
            except delta_tables.DeltaReadError as e:  # e.g. deletion vectors: only Spark reads it right
                r.notes.append(f"row checks skipped ({e}); a run still quarantines faulty rows")
        reports.append(r)
    if features is not None:
        if not features.exists():
            reports.append(InputReport(str(features), problems=[f"{features}: file not found (entity features)"]))
        else:
            reports.append(check_features_schema(cfg, features))
    return reports


def require_valid(cfg: Config, interactions: Location, features: Location | None) -> tuple[list[str], list[str]]:
    """Schema-check the inputs (no Spark); raise InputError naming every problem.

    Returns (context columns, meta feature columns) that the run will use.
    """
    reports = validate_inputs(cfg, interactions, features, rows=False)
    problems = [p for r in reports for p in r.problems]
    if problems:
        raise InputError(problems)
    context = reports[0].used_columns["context"]
    meta = reports[1].used_columns["meta"] if features is not None else []
    return context, meta
