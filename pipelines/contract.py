"""The input data contract (DESIGN.md), checked without Spark.

Two kinds of fault:
- schema faults (missing column, wrong type, unreadable file, timestamp without time zone):
  fatal; reported before any Spark work, one line each naming file and column;
- row faults (null key, label outside {0, 1}, NaN/inf, duplicate or future events): the
  daily run quarantines those rows (pipelines/labeled.py applies the same rules in Spark)
  and reports the counts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from core.config import Config
from pipelines import delta_log

ITEM_ID, EVENT_TS, LABEL, FEATURE_TS = "item_id", "event_timestamp", "label", "feature_timestamp"

# Row-fault reasons, shared with the Spark quarantine in pipelines/labeled.py.
NULL_KEY = "null_task_key"
BAD_TIMESTAMP = "null_timestamp"
BAD_LABEL = "label_not_0_1"
NON_FINITE = "nan_or_inf_context"
DUPLICATE = "duplicate_event"
FUTURE = "future_timestamp"
ROW_FAULTS = (NULL_KEY, BAD_TIMESTAMP, BAD_LABEL, NON_FINITE, DUPLICATE, FUTURE)


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


def input_format(path: Path) -> str:
    if path.is_dir() and (path / "_delta_log").is_dir():
        return "delta"
    if path.suffix.lower() in (".csv", ".tsv") or (path.is_dir() and any(path.glob("*.csv"))):
        return "csv"
    return "parquet"


def _delta_schema(path: Path) -> pa.Schema:
    """Schema of a Delta table from its transaction log."""
    spark_to_arrow = {"long": pa.int64(), "integer": pa.int32(), "short": pa.int16(), "byte": pa.int8(),
                      "float": pa.float32(), "double": pa.float64(), "boolean": pa.bool_(),
                      "string": pa.string(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
                      "timestamp_ntz": pa.timestamp("us")}
    fields = delta_log.schema_fields(delta_log.snapshot(path))
    return pa.schema([(f["name"], spark_to_arrow.get(f["type"], pa.null()) if isinstance(f["type"], str)
                       else pa.null()) for f in fields])


def read_schema(path: Path) -> pa.Schema:
    fmt = input_format(path)
    if fmt == "delta":
        return _delta_schema(path)
    if fmt == "csv":
        return pacsv.open_csv(path).schema
    return pads.dataset(path, format="parquet").schema


def read_table(path: Path, columns: list[str]) -> pa.Table:
    fmt = input_format(path)
    if fmt == "csv":
        return pacsv.read_csv(path).select(columns)
    if fmt == "delta":
        import pyarrow.parquet as pq

        files = delta_log.snapshot(path).parquet_files()
        return pa.concat_tables(pq.read_table(f, columns=columns) for f in files) if files else \
            read_schema(path).empty_table().select(columns)
    return pads.dataset(path, format="parquet").to_table(columns=columns)


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
    if kind.startswith("timestamp") and schema.field(column).type.unit == "ns":
        report.problems.append(f"{report.path}: column '{column}': nanosecond timestamps "
                               f"({schema.field(column).type}) cannot be read by Spark; write micro- or "
                               "milliseconds, e.g. pandas to_parquet(..., coerce_timestamps='us')")
    elif kind == "timestamp_naive" and "timestamp" in allowed:
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


def _check_columns(cfg: Config, path: Path, required: list[tuple[str, str, set[str], str]],
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


def check_interactions_schema(cfg: Config, path: Path) -> InputReport:
    report, context = _check_columns(cfg, path, [
        (ITEM_ID, "item id", KEY_KINDS, "an integer or string id"),
        (EVENT_TS, "event time", {"timestamp"}, "a timestamp with time zone"),
        (LABEL, "label", NUMERIC, "0/1 (integer, boolean or float)"),
    ], "context", cfg.data.context_columns)
    report.used_columns["context"] = context
    return report


def check_features_schema(cfg: Config, path: Path) -> InputReport:
    report, meta = _check_columns(cfg, path, [
        (FEATURE_TS, "snapshot time", {"timestamp"}, "a timestamp with time zone"),
    ], "meta feature", cfg.data.meta_feature_columns)
    report.used_columns["meta"] = meta
    if not meta and not report.problems:
        report.problems.append(f"{path}: no numeric feature columns besides keys and {FEATURE_TS}")
    return report


def _first(mask: np.ndarray, n: int = 5) -> list[int]:
    return np.flatnonzero(mask)[:n].tolist()


def count_row_faults(cfg: Config, report: InputReport, path: Path, now: np.datetime64 | None = None) -> None:
    """Count the rows a run would quarantine (reads the needed columns only)."""
    keys = list(cfg.data.task_key)
    context = report.used_columns.get("context", [])
    table = read_table(path, [*keys, ITEM_ID, EVENT_TS, LABEL, *context])
    report.rows = table.num_rows
    if table.num_rows == 0:
        report.problems.append(f"{path}: 0 rows")
        return
    df = table.to_pandas()
    checks = []
    null_key = df[keys].isna().any(axis=1).to_numpy()
    checks.append((NULL_KEY, ",".join(keys), null_key))
    ts = df[EVENT_TS]
    checks.append((BAD_TIMESTAMP, EVENT_TS, ts.isna().to_numpy()))
    label = df[LABEL].astype("float64")
    checks.append((BAD_LABEL, LABEL, ~label.isin([0.0, 1.0]).to_numpy()))
    if context:
        values = df[context].to_numpy(dtype="float64", na_value=np.nan)
        checks.append((NON_FINITE, ",".join(context), ~np.isfinite(values).all(axis=1)))
    checks.append((DUPLICATE, ",".join([*keys, ITEM_ID, EVENT_TS]),
                   df.duplicated(subset=[*keys, ITEM_ID, EVENT_TS], keep="first").to_numpy()))
    limit = now if now is not None else np.datetime64("now")
    checks.append((FUTURE, EVENT_TS, (ts.dt.tz_convert(None) > limit).to_numpy()))
    for reason, column, mask in checks:
        if mask.any():
            report.row_faults.append(RowFault(reason, column, int(mask.sum()), _first(mask)))
    bad = np.logical_or.reduce([m for _, _, m in checks])
    if bad.all():
        report.problems.append(f"{path}: all {len(df)} rows have row faults; nothing usable")


def validate_inputs(cfg: Config, interactions: Path, features: Path | None, *, rows: bool = True) -> list[InputReport]:
    """Check the inputs against the contract; rows=False checks schemas only (cheap)."""
    reports = []
    if not interactions.exists():
        reports.append(InputReport(str(interactions), problems=[f"{interactions}: file not found (interactions)"]))
    else:
        r = check_interactions_schema(cfg, interactions)
        if rows and r.ok:
            try:
                count_row_faults(cfg, r, interactions)
            except (OSError, pa.ArrowInvalid) as e:
                r.problems.append(f"{interactions}: unreadable: {e}")
            except delta_log.DeltaLogError as e:  # e.g. deletion vectors: only Spark reads it right
                r.notes.append(f"row checks skipped ({e}); a run still quarantines faulty rows")
        reports.append(r)
    if features is not None:
        if not features.exists():
            reports.append(InputReport(str(features), problems=[f"{features}: file not found (entity features)"]))
        else:
            reports.append(check_features_schema(cfg, features))
    return reports


def require_valid(cfg: Config, interactions: Path, features: Path | None) -> tuple[list[str], list[str]]:
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
