"""A Delta table's current snapshot read from its transaction log, without Spark.

    snap = delta_log.snapshot(path)          # DeltaLogError when this reader can't replay it
    snap.parquet_files({"run_date": "2026-01-15"})   # live data files of one partition

Small driver-side reads (the publish stage's one partition, `metaemb status`, input
checks) need the list of live data files, not a Spark job: a cold `DataFrame.inputFiles()`
on a Delta table costs 1-5 s here, a log replay a few milliseconds. The replay follows the
Delta protocol for tables a plain Parquet reader may read (minReaderVersion 1: no deletion
vectors, no column mapping, no v2 checkpoints): the newest complete classic checkpoint
(single or multi-part Parquet), then every JSON commit after it, in order, with no gap.
Anything else raises DeltaLogError, and callers fall back to Spark's Delta reader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")


class DeltaLogError(RuntimeError):
    """The log can't be replayed by this reader (the caller should use Spark's Delta reader)."""


@dataclass
class Snapshot:
    path: Path
    version: int
    min_reader_version: int = 0
    configuration: dict[str, str] = field(default_factory=dict)
    schema_string: str = ""
    partition_columns: list[str] = field(default_factory=list)
    files: dict[str, dict[str, str | None]] = field(default_factory=dict)  # path -> partitionValues

    def parquet_files(self, partition: dict[str, str] | None = None) -> list[Path]:
        """Live data files (sorted), optionally of one partition ({column: value as logged})."""
        if self.min_reader_version > 1:
            raise DeltaLogError(f"{self.path}: minReaderVersion {self.min_reader_version} needs a Delta reader")
        want = partition or {}
        out = [self._local(p) for p, values in self.files.items()
               if all(values.get(k) == v for k, v in want.items())]
        return sorted(out)

    def _local(self, rel: str) -> Path:
        u = urlparse(rel)
        if u.scheme in ("", "file"):
            p = Path(unquote(u.path))
            return p if p.is_absolute() else self.path / p
        raise DeltaLogError(f"{self.path}: data file {rel!r} is not on the local file system")


def _apply(snap: Snapshot, action: dict) -> None:
    if "add" in action:
        a = action["add"]
        snap.files[a["path"]] = dict(a.get("partitionValues") or {})
    elif "remove" in action:
        snap.files.pop(action["remove"]["path"], None)
    elif "metaData" in action:
        m = action["metaData"]
        snap.configuration = dict(m.get("configuration") or {})
        snap.schema_string = m.get("schemaString", "")
        snap.partition_columns = list(m.get("partitionColumns") or [])
    elif "protocol" in action:
        snap.min_reader_version = int(action["protocol"]["minReaderVersion"])


def _checkpoints(names: list[str]) -> dict[int, list[str]]:
    """Complete classic checkpoints: version -> its Parquet file(s)."""
    parts: dict[tuple[int, int], list[str]] = {}
    for name in names:
        m = _CHECKPOINT.match(name)
        if m:
            total = int(m.group(3)) if m.group(3) else 1
            parts.setdefault((int(m.group(1)), total), []).append(name)
    return {v: sorted(files) for (v, total), files in parts.items() if len(files) == total}


def _read_checkpoint(snap: Snapshot, log_dir: Path, files: list[str]) -> None:
    import pyarrow.parquet as pq

    for name in files:
        table = pq.read_table(log_dir / name, columns=["add", "metaData", "protocol"])
        for col in ("protocol", "metaData", "add"):
            for value in table.column(col).to_pylist():
                if value is None:
                    continue
                if col == "add":
                    value = {"path": value["path"], "partitionValues": dict(value["partitionValues"] or [])}
                elif col == "metaData":
                    value = {**value, "configuration": dict(value.get("configuration") or [])}
                _apply(snap, {col: value})


def snapshot(path: Path) -> Snapshot:
    """Replay the log of the Delta table at path into its newest snapshot."""
    path = Path(path)
    log_dir = path / "_delta_log"
    try:
        names = [p.name for p in log_dir.iterdir()]
    except OSError as e:
        raise DeltaLogError(f"{path}: no readable _delta_log ({e})") from e
    commits = sorted(int(m.group(1)) for m in map(_COMMIT.match, names) if m)
    checkpoints = _checkpoints(names)
    newest = max([*commits, *checkpoints, -1])
    if newest < 0:
        raise DeltaLogError(f"{path}: _delta_log holds no commit")
    snap = Snapshot(path=path, version=newest)
    start = max(checkpoints, default=-1)
    if start >= 0:
        try:
            _read_checkpoint(snap, log_dir, checkpoints[start])
        except Exception as e:  # an unexpected checkpoint layout: Spark knows better
            raise DeltaLogError(f"{path}: checkpoint {start} unreadable here ({e})") from e
    wanted = list(range(start + 1, newest + 1))
    have = [v for v in commits if v > start]
    if have != wanted:
        raise DeltaLogError(f"{path}: commits after checkpoint {start} are not contiguous")
    for v in wanted:
        for line in (log_dir / f"{v:020d}.json").read_text().splitlines():
            if line.strip():
                _apply(snap, json.loads(line))
    if not snap.schema_string:
        raise DeltaLogError(f"{path}: no metaData action in _delta_log")
    return snap


def schema_fields(snap: Snapshot) -> list[dict]:
    return json.loads(snap.schema_string)["fields"]
