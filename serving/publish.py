"""Publish stage: gate the run_date's embeddings, push them to Feast's online store, log it.

    publish(cfg, run_date) -> PublishResult          (no Spark: delta-rs reads, numpy figures)
        1. serving.gate.check_gate(): one model version in the partition, NaN/inf, empty day, row count vs
           the previous published day, mean embedding norm, and day-over-day mean cosine
           drift on common keys when that day has the same model version (a version switch
           skips drift: two models' embeddings are not comparable). A failure raises
           GateError (with every figure) before the online store is touched; the attempt is
           logged with status "blocked".
        2. A run_date older than the newest day the registry says is online is not pushed
           (it would overwrite newer embeddings); logged as "skipped".
        3. write_partition(method = cfg.feast.publish_method):
           "fast" writes the whole day in one online-store transaction (SQLite BEGIN..COMMIT
           in WAL mode / Redis MULTI..EXEC) and then records the interval in Feast's
           registry, so a kill -9 at any moment leaves the previous complete day served.
           "materialize" is Feast's stock path (batched, not atomic across batches).
           A model version switch (the day's version differs from the one served) replaces
           the online store's rows in that same transaction, so no task keeps an embedding of
           the previous version (docs/design.md, "Model version rollout").
        4. One row appended (serving.publish_log) to the Delta table publish_log (run_date, rows, method,
           seconds, gate figures, status, model_version, switched_from).


Re-publishing a date overwrites the same keys with the same values: idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Iterator

import pyarrow as pa

from core import tables
from core.config import Config
from serving import feast_repo
from serving.day import DayRows, PublishError, check_keys, day_figures, day_rows, partition_columns
from serving.gate import GateError, GateReport, check_gate
from serving.online import redis as redis_store
from serving.online import sqlite as sqlite_store
from serving.online.encode import EncodedBatch, encode_batch
from serving.publish_log import log_publish, served, written_not_served

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    run_date: date
    rows: int
    seconds: float
    method: str
    online_store: str
    status: str  # published | skipped
    gate: GateReport | None = None
    read_s: float = 0.0  # one streamed read of the day (the gate's figures pass; 0 without the gate)
    switched_from: str | None = None  # the model version served before, when this publish changed it
    model_version: str = ""


@dataclass
class WriteResult:
    rows: int
    seconds: float
    method: str
    interval: tuple[datetime, datetime]
    phases: dict[str, float] | None = None  # fast path: keys / write / registry seconds


def encoded_day(cfg: Config, day: DayRows) -> Iterator[EncodedBatch]:
    """The day's rows as online-store records, one encoded batch at a time."""
    for batch in day.batches(partition_columns(cfg)):
        yield encode_batch(cfg, pa.Table.from_batches([batch]))


def record_served(store, run_date: date) -> None:
    """Tell Feast's registry that run_date's interval is in the online store (what `check`, the
    skip of older dates and `status` read back)."""
    start, end = feast_repo.day_interval(run_date)
    store.registry.apply_materialization(store.get_feature_view(tables.FEATURE_VIEW), store.project, start, end,
                                         commit=True)


def write_partition(cfg: Config, run_date: date, method: str | None = None, store=None,
                    table=None, replace_all: bool = False) -> WriteResult:
    """Push one run_date partition into the online store; no gate (see publish()).
    table: the day's rows (a DayRows, or an Arrow table in memory); None reads them from
    Delta, streamed. replace_all: in the same transaction, remove the online rows of tasks the
    day lacks (publish sets it at a model version switch)."""
    method = method or cfg.feast.publish_method
    if replace_all and method != "fast":
        raise PublishError(f"{run_date}: a model version switch replaces the whole online store in one transaction, "
                           f"which only publish_method = 'fast' does (not {method!r}); publish this date with "
                           "[feast] publish_method = \"fast\"")
    store = store or feast_repo.feature_store(cfg)
    start, end = feast_repo.day_interval(run_date)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    if method == "materialize":
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress bars
            store.materialize(start_date=start, end_date=end, feature_views=[tables.FEATURE_VIEW])
        rows = getattr(table, "num_rows", -1)  # an Arrow table's; Feast's materialize does not count
    elif method == "fast":
        day = day_rows(cfg, run_date, table)
        rows = check_keys(cfg, day)
        t1 = time.perf_counter()
        phases["keys"] = t1 - t0
        if cfg.feast.online_store == "sqlite":
            sqlite_store.write_day(store, encoded_day(cfg, day), rows, replace_all=replace_all)
        else:
            redis_store.write_day(store, cfg, encoded_day(cfg, day), replace_all=replace_all)
        t2 = time.perf_counter()
        phases["write"] = t2 - t1  # read, encode and write, streamed batch by batch
        record_served(store, run_date)
        phases["registry"] = time.perf_counter() - t2
    else:
        raise ValueError(f"unknown publish method {method!r}")
    seconds = time.perf_counter() - t0
    counted = f"{rows} rows" if rows >= 0 else "rows (not counted: Feast's materialize does not report them)"
    log.info("published %s: %s in %.2fs via %s into %s", run_date, counted, seconds, method,
             cfg.feast.online_store)
    return WriteResult(rows=rows, seconds=seconds, method=method, interval=(start, end),
                       phases=phases if method == "fast" else None)


def publish(cfg: Config, run_date: date, *, method: str | None = None, skip_gate: bool = False) -> PublishResult:
    """Gate, then push the run_date partition of meta_embeddings to the online store, then log."""
    method = method or cfg.feast.publish_method
    t0 = time.perf_counter()
    gate = None
    today = day_rows(cfg, run_date)
    if not skip_gate:
        try:
            gate = check_gate(cfg, run_date, today)
        except GateError as e:
            log_publish(cfg, run_date, status="blocked", method=method, rows=e.report.rows,
                        seconds=time.perf_counter() - t0, gate=e.report, message=str(e))
            log.error("%s", e)
            raise
        log.info("gate passed for %s: %s", run_date, gate.figures())
    read_s = gate.read_s if gate else 0.0
    store = feast_repo.feature_store(cfg)
    try:
        store.get_feature_view(tables.FEATURE_VIEW)
    except Exception:  # first publish into this registry
        feast_repo.apply(cfg, store)
    start, end = feast_repo.day_interval(run_date)
    newest = feast_repo.latest_materialized(store)
    if newest is not None and newest > end:
        msg = (f"{written_not_served(feast_repo.served_day(newest))}: {run_date} not pushed online, "
               f"the online store already serves a newer day (materialized up to {newest.isoformat()})")
        log.warning("%s", msg)
        log_publish(cfg, run_date, status="skipped", method=method, rows=0,
                    seconds=time.perf_counter() - t0, gate=gate, message=msg)
        return PublishResult(run_date, 0, time.perf_counter() - t0, method, cfg.feast.online_store,
                             "skipped", gate, read_s)
    version = gate.model_version if gate else ",".join(sorted(day_figures(today, cfg.model.embedding_dim).versions))
    now = served(cfg)
    switched_from = now.model_version if now and now.model_version and now.model_version != version else None
    if switched_from:
        log.warning("model version switch on %s: %s -> %s (the online store is replaced with this day's rows)",
                    run_date, switched_from, version)
    res = write_partition(cfg, run_date, method, store=store, table=today,
                                      replace_all=switched_from is not None)
    rows = res.rows if res.rows >= 0 else (gate.rows if gate else -1)
    log_publish(cfg, run_date, status="published", method=method, rows=rows, seconds=res.seconds, gate=gate,
                model_version=version, switched_from=switched_from)
    return PublishResult(run_date, rows, res.seconds, method, cfg.feast.online_store, "published", gate, read_s,
                         switched_from, version)
