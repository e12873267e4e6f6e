"""Delta tables read and appended without Spark, through delta-rs (the `deltalake` package).

    delta_tables.read(path, columns, filters=[("run_date", "=", day)])   -> pyarrow.Table
    delta_tables.append(path, table)                                      one atomic commit

Small driver-side work (publish's read of one day, the gate, check, stage_log/publish_log,
`metaemb status`, input checks) needs no JVM: a Spark session costs ~10 s to start, a
delta-rs read of one day's partition milliseconds. delta-rs' Arrow path refuses tables with
features it cannot apply on read (deletion vectors, column mapping): that raises
DeltaReadError, and callers fall back to Spark or skip what needs the rows.

Writers: the stage tables (labeled_interactions, task_samples, meta_embeddings, quarantine)
are written by Spark only; stage_log and publish_log by delta-rs only (append), so no table
has two writing engines.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa


class DeltaReadError(RuntimeError):
    """delta-rs cannot read this table into Arrow (the caller falls back to Spark or skips)."""


def exists(path: Path | str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(str(path))


def _table(path: Path | str):
    from deltalake import DeltaTable

    try:
        return DeltaTable(str(path))
    except Exception as e:  # deltalake raises TableNotFoundError, DeltaError, DeltaProtocolError ...
        raise DeltaReadError(f"{path}: delta-rs cannot open the table: {e}") from e


def schema(path: Path | str) -> pa.Schema:
    """The table's schema as Arrow types (from the log; no data read)."""
    return pa.schema(_table(path).schema().to_arrow())


def read(path: Path | str, columns: list[str] | None = None, filters: list[tuple] | None = None) -> pa.Table:
    """The table's current snapshot (only `columns`, only rows matching partition `filters`)."""
    table = _table(path)
    try:
        return table.to_pyarrow_table(columns=columns, filters=filters or None)
    except Exception as e:
        protocol = table.protocol()
        raise DeltaReadError(
            f"{path}: delta-rs' Arrow reader refused the table (minReaderVersion "
            f"{protocol.min_reader_version}, reader features {protocol.reader_features or []}): {e}") from e


def append(path: Path | str, rows: pa.Table) -> None:
    """Append rows in one Delta commit (creates the table on first use)."""
    from deltalake import write_deltalake

    write_deltalake(str(path), rows, mode="append")
