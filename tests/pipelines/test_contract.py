"""Input contract: schema faults fail before Spark with file + column; row faults are counted."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaemb.cli import main
from pipelines import contract as C
from pipelines import row_rules
from pipelines.labeled import resolve_inputs
from project_helpers import make_config

pytestmark = pytest.mark.unit

UTC = dt.timezone.utc


def frame(n=4, **overrides) -> pd.DataFrame:
    df = pd.DataFrame({
        "user_id": pd.array(range(1, n + 1), dtype="Int64"),
        "item_id": range(10, 10 + n),
        "event_timestamp": pd.date_range("2026-10-01", periods=n, freq="h", tz="UTC"),
        "label": [0, 1] * (n // 2),
        "ctx_0": [0.5] * n,
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def write(tmp_path, df, name="interactions.parquet"):
    path = tmp_path / name
    df.to_parquet(path, coerce_timestamps="us", allow_truncated_timestamps=True)
    return path


def features(tmp_path):
    df = pd.DataFrame({"user_id": [1, 2], "feature_timestamp": pd.Timestamp("2026-10-01", tz="UTC"), "f": [1.0, 2.0]})
    return write(tmp_path, df, "features.parquet")


def problems(tmp_path, df) -> str:
    cfg = make_config(tmp_path)
    with pytest.raises(C.InputError) as e:
        C.require_valid(cfg, write(tmp_path, df), features(tmp_path))
    return str(e.value)


def test_missing_column_names_file_column_and_rename_hint(tmp_path):
    msg = problems(tmp_path, frame().rename(columns={"label": "labels"}))
    assert "interactions.parquet: column 'label' (label) is missing; did you mean 'labels'" in msg


def test_wrong_type_is_named(tmp_path):
    msg = problems(tmp_path, frame(label=["yes", "no", "yes", "no"]))
    assert "column 'label': type string, expected 0/1" in msg


def test_timestamp_without_time_zone(tmp_path):
    msg = problems(tmp_path, frame(event_timestamp=pd.date_range("2026-10-01", periods=4, freq="h")))
    assert "column 'event_timestamp': timestamp without time zone" in msg


def test_nanosecond_timestamps_are_read_as_microseconds(tmp_path):
    path = tmp_path / "ns.parquet"
    pq.write_table(pa.Table.from_pandas(frame()), path)  # pandas' default: nanoseconds
    assert C.nanosecond_columns(C.file_schema(path)) == ["event_timestamp"]
    assert C.require_valid(make_config(tmp_path), path, None) == (["ctx_0"], [])
    assert C.read_schema(path).field("event_timestamp").type == pa.timestamp("us", "UTC")
    assert C.read_table(path, ["event_timestamp"])["event_timestamp"].type == pa.timestamp("us", "UTC")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(C.InputError, match="broken.parquet: unreadable"):
        C.require_valid(make_config(tmp_path), bad, None)


def test_schema_drift_extra_columns_are_ignored_and_reported(tmp_path):
    df = frame(note=["a", "b", "c", "d"], ctx_1=[1.0] * 4)
    cfg = make_config(tmp_path)
    report = C.validate_inputs(cfg, write(tmp_path, df), None)[0]
    assert report.ok and report.used_columns["context"] == ["ctx_0", "ctx_1"]
    assert report.ignored_columns == ["note"]


def test_configured_context_column_missing_fails(tmp_path):
    cfg = make_config(tmp_path, data={"context_columns": ["ctx_0", "ctx_9"]})
    with pytest.raises(C.InputError, match="column 'ctx_9' \\(context\\) is missing"):
        C.require_valid(cfg, write(tmp_path, frame()), None)


def test_row_faults_counted_with_first_rows(tmp_path):
    df = frame(n=6)
    df.loc[1, "label"] = 3
    df.loc[2, "ctx_0"] = float("inf")
    df.loc[3, "user_id"] = pd.NA
    df.loc[5] = df.loc[4]  # duplicate event
    df.loc[0, "event_timestamp"] = pd.Timestamp("2099-01-01", tz="UTC")
    report = C.validate_inputs(make_config(tmp_path), write(tmp_path, df), None)[0]
    faults = {f.reason: (f.count, f.first_rows) for f in report.row_faults}
    assert faults == {row_rules.BAD_LABEL: (1, [1]), row_rules.NON_FINITE: (1, [2]), row_rules.NULL_KEY: (1, [3]),
                      row_rules.DUPLICATE: (1, [5]), row_rules.FUTURE: (1, [0])}
    assert report.ok  # row faults are quarantined by a run, not fatal


def test_resolve_inputs_fails_before_spark(tmp_path):
    # No Spark session is needed (or started) for a schema fault.
    cfg = make_config(tmp_path, data={"interactions": str(write(tmp_path, frame().drop(columns=["item_id"]))),
                                      "entity_features": str(features(tmp_path))})
    with pytest.raises(C.InputError, match="column 'item_id'"):
        resolve_inputs(cfg)


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = write(tmp_path, frame(), "good.parquet")
    assert main(["validate", "--interactions", str(good), "--features", ""]) == 0
    assert "good.parquet: OK, 4 rows" in capsys.readouterr().out
    bad = write(tmp_path, frame().drop(columns=["label"]), "bad.parquet")
    assert main(["validate", "--interactions", str(bad), "--features", str(features(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet: column 'label' (label) is missing" in err
