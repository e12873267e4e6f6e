"""Stage 1, labeled_interactions: interactions joined point-in-time with entity features.

For each event, the entity's latest feature snapshot at or before the event time (never
after, and no older than feature_ttl_days). Implemented as an as-of join: events and
snapshots are unioned per task key, sorted by time (a snapshot sorts before an event at the
same instant), and each event takes the last snapshot seen. That is one shuffle, with no
events x snapshots blow-up.

Partitioned by event_date. A run for date D (re)computes D plus any date of its window that
no earlier run computed, so the first run fills the window and later runs add one day.
Row-level faults go to the quarantine table with a reason instead of failing the run: the
rules of pipelines.row_rules.ROW_RULES, evaluated here as Spark Columns (SparkRows), the same
rules `metaemb validate` evaluates with Arrow.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import operator
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import stages, tables
from core.config import Config
from core.storage import Location
from pipelines import contract as C
from pipelines import lake, row_rules, spark_io

log = logging.getLogger(__name__)
STAGE = stages.LABELED


class EmptyDayError(ValueError):
    """The run date has no interactions at all: usually a broken upstream export."""


@dataclass(frozen=True)
class Inputs:
    interactions: Location
    features: Location | None
    context_columns: tuple[str, ...]
    meta_columns: tuple[str, ...]
    order_columns: tuple[str, ...] = ()  # tie-break among duplicate events (contract.order_columns)


def resolve_inputs(cfg: Config, interactions: str | None = None, features: str | None = None) -> Inputs:
    """Input paths (CLI overrides win over config), schema-checked before any Spark work."""
    inter = cfg.location(interactions or cfg.data.interactions)
    feats_value = features if features is not None else cfg.data.entity_features
    feats = cfg.location(feats_value) if feats_value else None
    context, meta = C.require_valid(cfg, inter, feats)
    order = C.order_columns(C.read_schema(inter), list(cfg.data.task_key))
    return Inputs(inter, feats, tuple(context), tuple(meta), order)


def window_dates(cfg: Config, run_date: dt.date) -> list[dt.date]:
    return row_rules.window_dates(run_date, cfg.pipeline.window_days)


class SparkRows:
    """The row operations row_rules.ROW_RULES are written against, as Spark Columns (never null)."""

    @staticmethod
    def _any(masks) -> F.Column:
        return functools.reduce(operator.or_, masks, F.lit(False))

    def any_null(self, columns) -> F.Column:
        return self._any(F.col(c).isNull() for c in columns)

    def one_of(self, column: str, values) -> F.Column:
        return F.coalesce(F.col(column).cast("double").isin(*values), F.lit(False))

    def any_non_finite(self, columns) -> F.Column:
        def bad(c):
            v = F.col(c).cast("double")
            return v.isNull() | F.isnan(v) | (F.abs(v) == float("inf"))
        return self._any(bad(c) for c in columns)

    def at_or_after(self, column: str, instant: dt.datetime) -> F.Column:
        return F.coalesce(F.col(column) >= F.lit(instant), F.lit(False))

    def dated_in(self, column: str, dates) -> F.Column:
        return F.coalesce(F.to_date(F.col(column)).isin(list(dates)), F.lit(False))

    def repeated(self, key, order, among: F.Column) -> F.Column:
        # Ascending, nulls first, NaN after every number: Spark's own order, which ArrowRows copies.
        ordering = [F.col(c).asc_nulls_first() for c in order] or [F.col(k) for k in key]
        window = Window.partitionBy(*[F.col(k) for k in key], among).orderBy(*ordering)
        return among & (F.row_number().over(window) > 1)

    def none_of(self, masks) -> F.Column:
        return ~self._any(masks)

    def first_reason(self, hits) -> F.Column:
        reason = F.lit(None).cast("string")
        for name, hit in reversed(hits):
            reason = F.when(hit, F.lit(name)).otherwise(reason)
        return reason


def _float_array(columns) -> F.Column:
    if not columns:
        return F.array().cast("array<float>")
    return F.array(*[F.col(c).cast("float") for c in columns])


def _as_of_join(cfg: Config, events: DataFrame, features: DataFrame | None, keys: list[str],
                meta: tuple[str, ...]) -> DataFrame:
    dim = len(meta)
    if features is None or dim == 0:
        return events.withColumn("meta", F.array().cast("array<float>")).withColumn("has_features", F.lit(False))
    snaps = features.select(*[F.col(k).cast("string").alias(k) for k in keys],
                            F.col(tables.FEATURE_TIMESTAMP).alias("_t"), F.lit(0).alias("_kind"),
                            _float_array(meta).alias("_meta"), F.col(tables.FEATURE_TIMESTAMP).alias("_meta_ts"))
    evs = events.withColumn("_t", F.col(tables.EVENT_TIMESTAMP)).withColumn("_kind", F.lit(1))
    w = Window.partitionBy(*keys).orderBy("_t", "_kind").rowsBetween(Window.unboundedPreceding, 0)
    ttl = cfg.data.feature_ttl_days * 86400
    joined = (evs.unionByName(snaps, allowMissingColumns=True)
              .withColumn("_meta", F.last("_meta", ignorenulls=True).over(w))
              .withColumn("_meta_ts", F.last("_meta_ts", ignorenulls=True).over(w))
              .where(F.col("_kind") == 1))
    fresh = F.col("_meta_ts").isNotNull() & (
        F.unix_timestamp(tables.EVENT_TIMESTAMP) - F.unix_timestamp("_meta_ts") <= ttl)
    zeros = F.array_repeat(F.lit(0.0).cast("float"), dim)
    return (joined.withColumn("meta", F.when(fresh, F.col("_meta")).otherwise(zeros))
            .withColumn("has_features", fresh)
            .drop("_t", "_kind", "_meta", "_meta_ts"))


def build(spark: SparkSession, cfg: Config, inputs: Inputs,
          dates: list[dt.date]) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(labeled rows, quarantined rows, the cached checked input to unpersist) for the given event dates."""
    keys = list(cfg.data.task_key)
    lo, hi = min(dates), max(dates)
    # The run date is the latest date computed: its end is the rules' clock.
    scope = row_rules.RowScope(tuple(keys), inputs.context_columns, inputs.order_columns, hi, tuple(sorted(dates)))
    raw = spark_io.read_input(spark, inputs.interactions)
    columns = raw.columns
    in_scope = raw.where(row_rules.in_scope(SparkRows(), scope)).withColumn("event_date", F.to_date(tables.EVENT_TIMESTAMP))
    checked = in_scope.withColumn("_fault", row_rules.fault_reason(SparkRows(), scope)).cache()
    quarantine = checked.where(F.col("_fault").isNotNull()).select(
        F.col("_fault").alias("reason"),
        F.to_json(F.struct(*[F.col(c) for c in columns])).alias("row"),
        F.lit(str(inputs.interactions)).alias("source"))
    good = checked.where(F.col("_fault").isNull()).select(
        *[F.col(k).cast("string").alias(k) for k in keys],
        F.col(tables.ITEM_ID).cast("string").alias(tables.ITEM_ID),
        F.xxhash64(F.col(tables.ITEM_ID).cast("string")).alias("item_hash"),
        F.col(tables.EVENT_TIMESTAMP), F.col(tables.LABEL).cast("float").alias(tables.LABEL),
        _float_array(inputs.context_columns).alias("context"), "event_date")
    features = None
    if inputs.features is not None and inputs.meta_columns:
        start = dt.datetime.combine(lo, dt.time(), dt.timezone.utc) - dt.timedelta(days=cfg.data.feature_ttl_days)
        end = dt.datetime.combine(hi + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        features = spark_io.read_input(spark, inputs.features).where(
            (F.col(tables.FEATURE_TIMESTAMP) >= F.lit(start)) & (F.col(tables.FEATURE_TIMESTAMP) < F.lit(end)))
    return _as_of_join(cfg, good, features, keys, inputs.meta_columns), quarantine, checked


def run(spark: SparkSession, cfg: Config, inputs: Inputs, run_date: dt.date, *, allow_empty_day: bool = False) -> dict:
    done = lake.completed_dates(cfg, STAGE)
    dates = sorted({run_date, *(d for d in window_dates(cfg, run_date) if d not in done)})
    with lake.Timer() as t:
        labeled, quarantine, checked = build(spark, cfg, inputs, dates)
        labeled = labeled.cache()
        by_date = labeled.groupBy("event_date").agg(
            F.count("*").alias("rows"), F.sum((~F.col("has_features")).cast("long")).alias("no_features")).collect()
        per_date = {r.event_date: r.rows for r in by_date}
        if not per_date.get(run_date) and not allow_empty_day:
            raise EmptyDayError(
                f"{inputs.interactions}: 0 usable interactions on run date {run_date} "
                f"(dates with data in this window: {len(per_date)}); refusing to publish a day built on "
                "stale data. Check the upstream export, or pass --allow-empty-day.")
        spark_io.replace_partitions(labeled, cfg, tables.LABELED_INTERACTIONS, "event_date", dates)
        q = quarantine.withColumn("run_date", F.lit(run_date)).cache()
        q_counts = {r.reason: r["count"] for r in q.groupBy("reason").count().collect()}
        if q_counts or lake.table_exists(cfg, tables.QUARANTINE):
            spark_io.replace_partitions(q, cfg, tables.QUARANTINE, "run_date", [run_date])
        no_features = sum(r.no_features or 0 for r in by_date)
        for cached in (labeled, q, checked):
            cached.unpersist()
    rows = sum(per_date.values())
    lake.log_stage(cfg, STAGE, {d: per_date.get(d, 0) for d in dates}, t.seconds,
                   f"run_date={run_date} quarantined={sum(q_counts.values())}")
    return {"stage": STAGE, "rows": rows, "dates_computed": len(dates), "seconds": t.seconds,
            "quarantined": q_counts, "rows_without_features": no_features}
