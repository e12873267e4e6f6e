"""One set of row-fault rules: `metaemb validate` (Arrow) and the daily run's quarantine (Spark)
find the same rows, reasons and counts; inputs as users write them (pandas' default Parquet,
CSV with ISO-8601 timestamps, Delta folders)."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from metaemb.cli import main
from pipelines import contract as C
from core import tables
from pipelines import labeled, row_rules, spark_io
from project_helpers import make_config

UTC = dt.timezone.utc
RUN_DATE = dt.date(2026, 10, 3)
WINDOW = 3  # 2026-10-01 .. 2026-10-03


def at(day: int, hour: int, month: int = 10, year: int = 2026) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime(year, month, day, hour, tzinfo=UTC))


# row_no: (user_id, item_id, event_timestamp, label, ctx_0, note), and the reason a run gives it.
ROWS = {
    0: ((1, 7, at(1, 6), 1, 0.5, "a"), None),
    1: ((None, 7, at(1, 7), 1, 0.5, "a"), row_rules.NULL_KEY),
    2: ((2, 7, None, 1, 0.5, "a"), row_rules.BAD_TIMESTAMP),
    3: ((2, 7, at(1, 8), 2, 0.5, "a"), row_rules.BAD_LABEL),
    4: ((2, 8, at(1, 9), None, 0.5, "a"), row_rules.BAD_LABEL),
    5: ((2, 9, at(1, 10), 0, float("nan"), "a"), row_rules.NON_FINITE),
    6: ((2, 10, at(1, 11), 0, float("inf"), "a"), row_rules.NON_FINITE),
    7: ((None, 11, at(1, 12), 5, float("-inf"), "a"), row_rules.NULL_KEY),  # precedence: the first rule wins
    # duplicates (same user, item, time): the first in (label, ctx_0, note, row_no) order is kept
    8: ((3, 7, at(2, 10), 1, 0.5, "a"), row_rules.DUPLICATE),
    9: ((3, 7, at(2, 10), 0, 0.5, "a"), None),  # label 0 sorts first
    10: ((4, 7, at(2, 11), 1, 0.3, "a"), row_rules.DUPLICATE),
    11: ((4, 7, at(2, 11), 1, 0.1, "a"), None),
    12: ((4, 7, at(2, 11), 1, 0.2, "a"), row_rules.DUPLICATE),
    13: ((5, 7, at(2, 12), 5, 0.5, "a"), row_rules.BAD_LABEL),  # a faulty copy does not make its twin a duplicate
    14: ((5, 7, at(2, 12), 1, 0.5, "a"), None),
    15: ((6, 7, at(3, 1), 1, 0.5, "b"), row_rules.DUPLICATE),
    16: ((6, 7, at(3, 1), 1, 0.5, None), None),  # a null note sorts first
    17: ((6, 8, at(3, 2), 0, float("nan"), "a"), row_rules.NON_FINITE),
    18: ((6, 8, at(3, 2), 0, float("nan"), "a"), row_rules.NON_FINITE),
    19: ((7, 7, at(3, 23), 1, 0.5, "a"), None),
    # outside the run's window: not its rows (the whole-file check sees them)
    20: ((8, 7, at(1, 0, year=2099, month=1), 1, 0.5, "a"), "outside: future"),
    21: ((8, 7, at(5, 0), 1, 0.5, "a"), "outside: after the run date"),
    22: ((8, 7, at(20, 0, month=9), 1, 0.5, "a"), "outside: before the window"),
    23: ((8, 7, at(20, 0, month=9), 1, 0.5, "a"), "outside: before the window"),
}
IN_WINDOW = {n: reason for n, (_, reason) in ROWS.items() if not (reason or "").startswith("outside")}


def frame() -> pd.DataFrame:
    df = pd.DataFrame([values for values, _ in ROWS.values()],
                      columns=["user_id", "item_id", "event_timestamp", "label", "ctx_0", "note"])
    df["user_id"] = df["user_id"].astype("Int64")
    df["label"] = df["label"].astype("Int64")
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    df["row_no"] = list(ROWS)
    return df


def write_parquet_pandas_default(tmp_path):
    path = tmp_path / "interactions.parquet"
    frame().to_parquet(path)  # pandas' defaults: nanosecond timestamps
    assert C.nanosecond_columns(C.file_schema(path)) == ["event_timestamp"]
    return path


def write_csv(tmp_path):
    df = frame()
    df["event_timestamp"] = df["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # ISO-8601, UTC
    df["ctx_0"] = df["ctx_0"].map(lambda v: "NaN" if np.isnan(v) else "Inf" if v == np.inf
                                  else "-Inf" if v == -np.inf else repr(v))
    path = tmp_path / "interactions.csv"
    df.to_csv(path, index=False, na_rep="")
    return path


def write_delta(tmp_path, spark):
    staged = tmp_path / "staged.parquet"
    frame().to_parquet(staged, coerce_timestamps="us")
    path = tmp_path / "interactions_delta"
    spark.read.parquet(str(staged)).write.format("delta").save(str(path))
    return path


@pytest.fixture(params=["parquet-pandas-default", "csv", "delta"])
def interactions(request, tmp_path, spark):
    if request.param == "csv":
        return write_csv(tmp_path)
    if request.param == "delta":
        return write_delta(tmp_path, spark)
    return write_parquet_pandas_default(tmp_path)


def validate_config(tmp_path):
    path = tmp_path / "validate.toml"
    path.write_text('[data]\ncontext_columns = ["ctx_0"]\nentity_features = ""\n')
    return path


def cli_counts(out: str) -> dict[str, int]:
    return {reason: int(n) for n, reason in re.findall(r": (\d+) rows (\w+) \(first rows", out)}


def validate_rows(cfg, path, run_date=None, window_days=None) -> dict[int, str]:
    """row_no -> reason, from the contract's evaluator (row numbers mapped through the file's row_no)."""
    scope = C.row_scope(cfg, ["ctx_0"], C.read_schema(path), run_date, window_days)
    _, checked, reasons = C.row_reasons(path, scope)
    row_no = C.read_table(path, ["row_no"])["row_no"].to_numpy()
    return {int(row_no[i]): r for i, r in zip(checked, reasons)}


@pytest.mark.spark
def test_validate_and_the_run_find_the_same_rows_reasons_and_counts(spark, tmp_path, interactions, capsys):
    rc = main(["--config", str(validate_config(tmp_path)), "validate", "--interactions", str(interactions),
               "--date", RUN_DATE.isoformat(), "--window-days", str(WINDOW)])
    out = capsys.readouterr().out
    assert rc == 0, out
    counts = cli_counts(out)

    cfg = make_config(tmp_path, data={"interactions": str(interactions), "entity_features": "",
                                      "context_columns": ["ctx_0"]}, pipeline={"window_days": WINDOW})
    assert validate_rows(cfg, interactions, RUN_DATE, WINDOW) == IN_WINDOW

    result = labeled.run(spark, cfg, labeled.resolve_inputs(cfg), RUN_DATE)
    q = spark_io.read_table(spark, cfg, tables.QUARANTINE).where(F.col("run_date") == F.lit(RUN_DATE)).collect()
    quarantined = {json.loads(r.row)["row_no"]: r.reason for r in q}
    kept = sorted((r.user_id, r.event_timestamp.astimezone(UTC), r.label, round(r.context[0], 6))
                  for r in spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS).collect())

    expected = {n: r for n, r in IN_WINDOW.items() if r is not None}
    assert quarantined == expected
    assert kept == sorted((str(v[0]), v[2].to_pydatetime(), float(v[3]), v[4])
                          for n, (v, _) in ROWS.items() if n in IN_WINDOW and IN_WINDOW[n] is None)
    assert result["quarantined"] == counts == {
        row_rules.NULL_KEY: 2, row_rules.BAD_TIMESTAMP: 1, row_rules.BAD_LABEL: 3, row_rules.NON_FINITE: 4, row_rules.DUPLICATE: 4}


@pytest.mark.unit
def test_whole_file_check_has_the_same_rules_with_todays_end_as_the_clock(tmp_path):
    path = write_parquet_pandas_default(tmp_path)
    cfg = make_config(tmp_path, data={"context_columns": ["ctx_0"]})
    got = validate_rows(cfg, path)
    assert got[20] == row_rules.FUTURE  # 2099
    assert got[21] is None and got[22] is None and got[23] == row_rules.DUPLICATE
    assert {n: r for n, r in got.items() if n in IN_WINDOW} == IN_WINDOW
    # Told a run date, only its window is checked: rows after the run date are a later run's.
    long_window = validate_rows(cfg, path, dt.date(2026, 10, 4), 400)
    assert 20 not in long_window and 21 not in long_window and long_window[23] == row_rules.DUPLICATE


@pytest.mark.spark
def test_pandas_default_parquet_runs_through_the_labeled_stage(spark, tmp_path):
    """Nanosecond timestamps (pandas' default) are converted on read, to the microsecond."""
    times = ["2026-10-01T06:00:00.123456789Z", "2026-10-01T07:00:00Z", "2026-10-01T08:00:00Z"]
    events = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [7, 8, 7], "label": [1, 0, 1], "ctx_0": [0.5, 0.1, 0.2],
                           "event_timestamp": pd.to_datetime(times, format="ISO8601")})
    snaps = pd.DataFrame({"user_id": [1, 2], "f_0": [1.0, 2.0],
                          "feature_timestamp": pd.to_datetime(["2026-10-01T00:00:00.5Z"] * 2, format="ISO8601")})
    inter, feats = tmp_path / "i.parquet", tmp_path / "f.parquet"
    events.to_parquet(inter)
    snaps.to_parquet(feats)
    cfg = make_config(tmp_path, data={"interactions": str(inter), "entity_features": str(feats)},
                      pipeline={"window_days": 1})
    assert C.validate_inputs(cfg, inter, feats)[0].ok
    result = labeled.run(spark, cfg, labeled.resolve_inputs(cfg), dt.date(2026, 10, 1))
    rows = spark_io.read_table(spark, cfg, tables.LABELED_INTERACTIONS).orderBy("event_timestamp").collect()
    assert result["rows"] == 3 and result["rows_without_features"] == 0
    assert rows[0].event_timestamp.astimezone(UTC) == dt.datetime(2026, 10, 1, 6, 0, 0, 123456, tzinfo=UTC)
    assert [r.meta[0] for r in rows] == [1.0, 1.0, 2.0]


@pytest.mark.unit
def test_validate_a_file_without_features_needs_no_feature_file(tmp_path, capsys):
    config = tmp_path / "metaemb.toml"
    config.write_text(f'[data]\nentity_features = "{tmp_path / "not_there.parquet"}"\n')
    path = tmp_path / "events.parquet"
    frame().iloc[[0, 9, 11]].drop(columns=["note"]).to_parquet(path)
    assert main(["--config", str(config), "validate", "--interactions", str(path)]) == 0
    captured = capsys.readouterr()
    assert "events.parquet: OK, 3 rows" in captured.out and "not_there" not in captured.out + captured.err
    # Without --interactions the config's inputs are checked, features included.
    assert main(["--config", str(config), "validate"]) == 2
    assert "not_there.parquet: file not found" in capsys.readouterr().err


@pytest.mark.spark
def test_spark_and_arrow_evaluators_agree_on_every_row_of_the_file(spark, tmp_path):
    """No window: the future rule fires too (against the end of 2026-10-04, 10-05 and 2099 are future)."""
    path = write_parquet_pandas_default(tmp_path)
    cfg = make_config(tmp_path, data={"context_columns": ["ctx_0"]})
    scope = C.row_scope(cfg, ["ctx_0"], C.read_schema(path), dt.date(2026, 10, 4))
    scope = row_rules.RowScope(scope.keys, scope.context, scope.order, scope.run_date, dates=None)
    _, checked, reasons = C.row_reasons(path, scope)
    arrow = dict(zip(checked.tolist(), reasons.tolist()))
    rows = spark_io.read_input(spark, path).withColumn("_fault", row_rules.fault_reason(labeled.SparkRows(), scope))
    assert {r.row_no: r._fault for r in rows.select("row_no", "_fault").collect()} == arrow
    assert arrow[20] == arrow[21] == row_rules.FUTURE and arrow[23] == row_rules.DUPLICATE
    assert {n: r for n, r in arrow.items() if n in IN_WINDOW} == IN_WINDOW
