"""Publish stage: gate the run_date's embeddings, push them to Feast's online store, log it.

    publish(cfg, spark, run_date) -> PublishResult
        1. check_gate(): NaN/inf, empty day, row count vs the previous published day,
           mean embedding norm, day-over-day mean cosine drift on common keys. A failure
           raises GateError (with every figure) before the online store is touched; the
           attempt is logged with status "blocked".
        2. A run_date older than the newest day the registry says is online is not pushed
           (it would overwrite newer embeddings); logged as "skipped".
        3. feast_store.write_partition(method = cfg.feast.publish_method):
           "fast" writes the whole day in one online-store transaction (SQLite BEGIN..COMMIT
           in WAL mode / Redis MULTI..EXEC) and then records the interval in Feast's
           registry, so a kill -9 at any moment leaves the previous complete day served.
           "materialize" is Feast's stock path (batched, not atomic across batches).
        4. One row appended to the Delta table publish_log (run_date, rows, method,
           seconds, gate figures, status).

Re-publishing a date overwrites the same keys with the same values: idempotent.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone

from core import tables
from core.config import Config
from serving import feast_store

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """The day failed the publish gate; .report holds the figures. Nothing was published."""

    def __init__(self, message: str, report: "GateReport"):
        super().__init__(message)
        self.report = report


@dataclass
class GateReport:
    run_date: date
    rows: int
    nan_inf_rows: int = 0
    bad_length_rows: int = 0
    mean_norm: float = float("nan")
    prev_run_date: date | None = None
    prev_rows: int | None = None
    row_ratio: float | None = None
    common_keys: int = 0
    mean_cosine: float | None = None
    mean_drift: float | None = None
    model_version: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def figures(self) -> str:
        parts = [f"rows={self.rows}", f"nan_inf_rows={self.nan_inf_rows}",
                 f"bad_length_rows={self.bad_length_rows}", f"mean_norm={self.mean_norm:.4g}"]
        if self.prev_run_date is not None:
            parts += [f"prev_run_date={self.prev_run_date}", f"prev_rows={self.prev_rows}",
                      f"row_ratio={self.row_ratio:.4g}", f"common_keys={self.common_keys}"]
            if self.mean_drift is not None:
                parts.append(f"mean_drift={self.mean_drift:.4g}")
        return ", ".join(parts)


@dataclass
class PublishResult:
    run_date: date
    rows: int
    seconds: float
    method: str
    online_store: str
    status: str  # published | skipped
    gate: GateReport | None = None


# ---------------------------------------------------------------------- publish_log


def _log_schema():
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("run_date", T.DateType(), False),
        T.StructField("logged_at", T.TimestampType(), False),
        T.StructField("status", T.StringType(), False),  # published | blocked | skipped
        T.StructField("method", T.StringType(), False),
        T.StructField("online_store", T.StringType(), False),
        T.StructField("rows", T.LongType(), False),
        T.StructField("seconds", T.DoubleType(), False),
        T.StructField("nan_inf_rows", T.LongType(), True),
        T.StructField("mean_norm", T.DoubleType(), True),
        T.StructField("prev_run_date", T.DateType(), True),
        T.StructField("prev_rows", T.LongType(), True),
        T.StructField("row_ratio", T.DoubleType(), True),
        T.StructField("common_keys", T.LongType(), True),
        T.StructField("mean_drift", T.DoubleType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("message", T.StringType(), True),
    ])


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def log_publish(cfg: Config, spark, run_date: date, *, status: str, method: str, rows: int,
                seconds: float, gate: GateReport | None, message: str = "") -> None:
    g = gate or GateReport(run_date=run_date, rows=rows)
    row = (run_date, datetime.now(timezone.utc).replace(tzinfo=None), status, method,
           cfg.feast.online_store, int(rows), float(seconds), int(g.nan_inf_rows),
           _finite(float(g.mean_norm)), g.prev_run_date, g.prev_rows, _finite(g.row_ratio),
           int(g.common_keys), _finite(g.mean_drift), g.model_version or None, message[:2000])
    df = spark.createDataFrame([row], schema=_log_schema())
    df.write.format("delta").mode("append").save(str(cfg.table_path(tables.PUBLISH_LOG)))


def publish_log(cfg: Config, spark):
    """The publish_log table as a DataFrame (None when nothing was ever published)."""
    path = cfg.table_path(tables.PUBLISH_LOG)
    if not (path / "_delta_log").is_dir():
        return None
    return spark.read.format("delta").load(str(path))


def previous_published(cfg: Config, spark, run_date: date) -> tuple[date, int] | None:
    """(run_date, rows) of the newest day before run_date that was published."""
    from pyspark.sql import functions as F

    df = publish_log(cfg, spark)
    if df is None:
        return None
    row = (df.where((F.col("status") == "published") & (F.col("run_date") < F.lit(run_date)))
           .orderBy(F.col("run_date").desc(), F.col("logged_at").desc())
           .select("run_date", "rows").limit(1).collect())
    return (row[0]["run_date"], row[0]["rows"]) if row else None


def written_not_served(served: date) -> str:
    """How publish_log, check and status say that a day went to Delta but not online."""
    return f"written; online serves {served}"


@dataclass
class Outcome:
    """What publishing left online for a run_date: the day the online store serves now."""
    run_date: date
    status: str  # the latest publish_log status of run_date: published | skipped
    served_date: date

    def describe(self) -> str:
        if self.served_date == self.run_date:
            return f"published; online serves {self.run_date}"
        return written_not_served(self.served_date)


def latest_outcome(cfg: Config, spark, run_date: date, store=None) -> Outcome | None:
    """The run_date's latest publish_log status and the day the online store serves now.

    None when publish never ran for run_date. A blocked or never-pushed day raises
    PublishError: check has nothing consistent to verify then.
    """
    from pyspark.sql import functions as F

    df = publish_log(cfg, spark)
    rows = [] if df is None else (df.where(F.col("run_date") == F.lit(run_date))
                                  .orderBy(F.col("logged_at").desc()).select("status", "message").limit(1).collect())
    if not rows:
        return None
    status = rows[0]["status"]
    if status == "blocked":
        raise feast_store.PublishError(f"publish of {run_date} was blocked by the gate: {rows[0]['message']}")
    newest = feast_store.latest_materialized(store or feast_store.feature_store(cfg))
    served = feast_store.served_day(newest) if newest is not None else None
    if served is None or served < run_date:
        raise feast_store.PublishError(
            f"publish_log says {status} for {run_date}, but the online store serves "
            f"{served or 'nothing'}: rerun the publish stage for {run_date}")
    return Outcome(run_date, status, served)


# ---------------------------------------------------------------------------- gate


def check_gate(cfg: Config, spark, run_date: date, *, raise_on_failure: bool = True) -> GateReport:
    """Figures of the run_date partition vs the previous published day; GateError if out of bounds."""
    from pyspark.sql import functions as F

    path = cfg.table_path(tables.META_EMBEDDINGS)
    if not (path / "_delta_log").is_dir():
        raise feast_store.PublishError(f"{path}: no Delta table meta_embeddings to publish from")
    dim = cfg.model.embedding_dim
    emb = F.col(tables.EMBEDDING)
    table = spark.read.format("delta").load(str(path))
    today = table.where(F.col(tables.RUN_DATE) == F.lit(run_date))
    nonfinite = F.exists(emb, lambda x: F.isnan(x) | (F.abs(x) == F.lit(float("inf"))))
    norm = F.sqrt(F.aggregate(emb, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x))
    stats = today.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(emb.isNull() | nonfinite, 1).otherwise(0)).alias("nan_inf"),
        F.sum(F.when(emb.isNotNull() & (F.size(emb) != dim), 1).otherwise(0)).alias("bad_len"),
        F.avg(F.when(emb.isNotNull() & ~nonfinite, norm)).alias("mean_norm"),
        F.max(tables.MODEL_VERSION).alias("model_version"),
    ).collect()[0]
    g = cfg.gate
    rep = GateReport(run_date=run_date, rows=int(stats["rows"]), nan_inf_rows=int(stats["nan_inf"] or 0),
                     bad_length_rows=int(stats["bad_len"] or 0),
                     mean_norm=float(stats["mean_norm"]) if stats["mean_norm"] is not None else float("nan"),
                     model_version=stats["model_version"] or "")
    if rep.rows == 0:
        rep.failures.append("no rows for this run_date (empty day)")
    if rep.nan_inf_rows:
        rep.failures.append(f"{rep.nan_inf_rows} embeddings are null or hold NaN/inf")
    if rep.bad_length_rows:
        rep.failures.append(f"{rep.bad_length_rows} embeddings are not {dim} long")
    if rep.rows and not (g.min_mean_norm <= rep.mean_norm <= g.max_mean_norm):
        rep.failures.append(f"mean embedding norm {rep.mean_norm:.4g} outside "
                            f"[{g.min_mean_norm:g}, {g.max_mean_norm:g}]")

    prev = previous_published(cfg, spark, run_date)
    if prev is not None and rep.rows:
        rep.prev_run_date, rep.prev_rows = prev
        rep.row_ratio = rep.rows / rep.prev_rows if rep.prev_rows else float("inf")
        if not (g.min_row_ratio <= rep.row_ratio <= g.max_row_ratio):
            rep.failures.append(
                f"row count {rep.rows} vs {rep.prev_rows} on {rep.prev_run_date}: ratio "
                f"{rep.row_ratio:.4g} outside [{g.min_row_ratio:g}, {g.max_row_ratio:g}]")
        if not rep.nan_inf_rows and not rep.bad_length_rows:
            keys = cfg.data.task_key
            a = today.select(*keys, emb.alias("a"))
            b = (table.where(F.col(tables.RUN_DATE) == F.lit(rep.prev_run_date))
                 .select(*keys, emb.alias("b")))
            dot = F.aggregate(F.zip_with("a", "b", lambda x, y: x.cast("double") * y),
                              F.lit(0.0).cast("double"), lambda acc, x: acc + x)
            na = F.sqrt(F.aggregate("a", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x))
            nb = F.sqrt(F.aggregate("b", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x))
            cos = F.when((na > 0) & (nb > 0), dot / (na * nb))
            d = a.join(b, on=keys, how="inner").agg(F.count(F.lit(1)).alias("n"),
                                                    F.avg(cos).alias("cos")).collect()[0]
            rep.common_keys = int(d["n"])
            if rep.common_keys and d["cos"] is not None:
                rep.mean_cosine = float(d["cos"])
                rep.mean_drift = 1.0 - rep.mean_cosine
                if rep.mean_drift > g.max_mean_drift:
                    rep.failures.append(
                        f"day-over-day drift 1 - mean cosine = {rep.mean_drift:.4g} over "
                        f"{rep.common_keys} common keys > max_mean_drift {g.max_mean_drift:g}")
    if rep.failures and raise_on_failure:
        raise GateError(
            f"publish gate blocked run_date {run_date}: " + "; ".join(rep.failures)
            + f" [{rep.figures()}]", rep)
    return rep


# -------------------------------------------------------------------------- publish


def publish(cfg: Config, spark, run_date: date, *, method: str | None = None,
            skip_gate: bool = False) -> PublishResult:
    """Gate, then push the run_date partition of meta_embeddings to the online store, then log."""
    method = method or cfg.feast.publish_method
    t0 = time.perf_counter()
    gate = None
    if not skip_gate:
        try:
            gate = check_gate(cfg, spark, run_date)
        except GateError as e:
            log_publish(cfg, spark, run_date, status="blocked", method=method, rows=e.report.rows,
                        seconds=time.perf_counter() - t0, gate=e.report, message=str(e))
            log.error("%s", e)
            raise
        log.info("gate passed for %s: %s", run_date, gate.figures())
    store = feast_store.feature_store(cfg)
    try:
        store.get_feature_view(feast_store.FEATURE_VIEW)
    except Exception:  # first publish into this registry
        feast_store.apply(cfg, store)
    start, end = feast_store.day_interval(run_date)
    newest = feast_store.latest_materialized(store)
    if newest is not None and newest > end:
        msg = (f"{written_not_served(feast_store.served_day(newest))}: {run_date} not pushed online, "
               f"the online store already serves a newer day (materialized up to {newest.isoformat()})")
        log.warning("%s", msg)
        log_publish(cfg, spark, run_date, status="skipped", method=method, rows=0,
                    seconds=time.perf_counter() - t0, gate=gate, message=msg)
        return PublishResult(run_date, 0, time.perf_counter() - t0, method, cfg.feast.online_store,
                             "skipped", gate)
    res = feast_store.write_partition(cfg, spark, run_date, method, store=store)
    rows = res.rows if res.rows >= 0 else (gate.rows if gate else -1)
    log_publish(cfg, spark, run_date, status="published", method=method, rows=rows,
                seconds=res.seconds, gate=gate)
    return PublishResult(run_date, rows, res.seconds, method, cfg.feast.online_store, "published", gate)


def result_dict(res: PublishResult) -> dict:
    d = asdict(res)
    d["run_date"] = res.run_date.isoformat()
    if res.gate is not None:
        d["gate"]["run_date"] = res.gate.run_date.isoformat()
        if res.gate.prev_run_date:
            d["gate"]["prev_run_date"] = res.gate.prev_run_date.isoformat()
    return d
