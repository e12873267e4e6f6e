"""The input data contract (DESIGN.md), checked without Spark.

Two kinds of fault:
- schema faults (missing column, wrong type, unreadable file, timestamp without time zone):
  fatal; reported before any Spark work, one line each naming file and column;
- row faults (null key, label outside {0, 1}, NaN/inf, duplicate or future events): the
  daily run quarantines those rows and reports the counts. The rules are defined once, in
  pipelines/row_rules.py; here they are counted over the input file (`metaemb validate`).
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from core import tables
from core.config import Config
from core.storage import Location, as_location
from pipelines import delta_tables, row_rules

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


# --- row faults (the rules: pipelines/row_rules.py) ---------------------------------------

ORDERABLE = {"bool", "int", "float", "string", "timestamp", "timestamp_naive", "date"}


def order_columns(schema: pa.Schema, keys: list[str]) -> tuple[str, ...]:
    """The tie-break for duplicates: every other column that sorts the same way in Arrow and
    Spark (numbers, booleans, strings, dates, timestamps), in file order."""
    event_key = {*keys, tables.ITEM_ID, tables.EVENT_TIMESTAMP}
    return tuple(f.name for f in schema if f.name not in event_key and _kind(f.type) in ORDERABLE)


def row_scope(cfg: Config, context: list[str], schema: pa.Schema, run_date: dt.date | None = None,
              window_days: int | None = None) -> row_rules.RowScope:
    """The scope `validate` checks: without a run date, every row with today's end (UTC) as the
    clock; with one, the window a first run for that date computes (its window_days days)."""
    keys = list(cfg.data.task_key)
    dates = None
    if run_date is not None:
        dates = tuple(row_rules.window_dates(run_date, window_days or cfg.pipeline.window_days))
    return row_rules.RowScope(tuple(keys), tuple(context), order_columns(schema, keys),
                    run_date or dt.datetime.now(dt.timezone.utc).date(), dates)


def row_reasons(path: Location, scope: row_rules.RowScope) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows in the input, row numbers checked, their fault reason or None), like a run would."""
    columns = list(dict.fromkeys([*scope.event_key, tables.LABEL, *scope.context, *scope.order]))
    table = read_table(path, columns)
    total, checked = table.num_rows, np.arange(table.num_rows)
    keep = row_rules.in_scope(row_rules.ArrowRows(table), scope)
    if keep is not None:
        checked = checked[keep]
        table = table.take(checked)
    return total, checked, row_rules.fault_reason(row_rules.ArrowRows(table), scope)


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
    for rule in row_rules.ROW_RULES:
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
