"""Publish stage: gate the run_date's embeddings, write them where no reader looks, switch the
readers to them in one registry write, remove what they read before, log it.

    publish(cfg, run_date) -> PublishResult
        1. serving.gate.check_gate(): one model version in the partition, NaN/inf, empty day,
           row count vs the previous published day, mean embedding norm, and day-over-day mean
           cosine drift on common keys when that day has the same model version. A failure
           raises GateError (with every figure) before the online store is touched; the attempt
           is logged with status "blocked".
        2. A run_date older than the day the online store serves is not pushed (it would
           replace newer embeddings); logged as "skipped".
        3. write_partition() (serving/slots.py has the protocol): the namespace that the feature
           service does not name is emptied if a killed publish left rows in it, the day is
           written into it ([feast] publish_method "fast": batches from the driver, or from the
           Spark executors with [feast] write_from = "spark"; "materialize": Feast's stock path),
           then the service is pointed at it (the switch: one registry write), and after
           [feast] switch_grace_s the namespace served before is removed in batches. A kill -9
           before the switch leaves the previous day served whole, after it the new one; the
           next publish removes whatever a killed one left.
        4. One row appended (serving.publish_log) to the Delta table publish_log.

Every publish replaces the whole served day, so readers never see two days or two model
versions; re-publishing a date writes the same rows again: idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterator

import pyarrow as pa

from core.config import Config
from pipelines.faults import kill_point
from serving import feast_repo, slots
from serving.day import DayRows, check_keys, day_figures, day_rows, partition_columns
from serving.gate import GateError, GateReport, check_gate
from serving.online import redis as redis_store
from serving.online import sqlite as sqlite_store
from serving.online.encode import EncodedBatch, encode_batch, encoding
from serving.publish_log import log_publish, served, written_not_served

log = logging.getLogger(__name__)

# The day's bulk write from somewhere else than this process (metaemb.daily: the Spark
# executors): (cfg, run_date, the Redis namespace to write) -> rows written.
Writer = Callable[[Config, date, redis_store.Namespace], int]


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
    view: str = ""  # the feature view (namespace) the day went into and readers now see
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class WriteResult:
    rows: int
    seconds: float  # until readers see the new day: empty the namespace if needed, write, switch
    method: str
    view: str
    phases: dict[str, float]  # prepare / write / switch / retire seconds
    retired_keys: int = 0  # Redis: hashes the retired namespace's removal touched


def encoded_day(cfg: Config, day: DayRows) -> Iterator[EncodedBatch]:
    """The day's rows as online-store records, one encoded batch at a time."""
    enc = encoding(cfg)
    for batch in day.batches(partition_columns(cfg)):
        yield encode_batch(enc, pa.Table.from_batches([batch]))


class _Online:
    """The online store's namespace operations, for SQLite (a table per view) or Redis (the
    view's fields in every task's hash)."""

    def __init__(self, cfg: Config, store):
        self.cfg, self.store = cfg, store
        self.redis = redis_store.connect(cfg) if cfg.feast.online_store == "redis" else None

    def namespace(self, view: str) -> redis_store.Namespace:
        return redis_store.namespace(self.store, view)

    def holds(self, view: str) -> bool:
        if self.redis is None:
            return sqlite_store.holds(self.store, view)
        return redis_store.holds(self.redis, self.namespace(view))

    def mark(self, view: str, run_date: date) -> None:
        if self.redis is not None:
            redis_store.mark(self.redis, self.namespace(view), run_date.isoformat())

    def clean(self, view: str) -> int:
        if self.redis is None:
            sqlite_store.clean(self.store, view)
            return 0
        return redis_store.clean(self.cfg, self.redis, self.namespace(view), self.cfg.feast.write_batch_rows)

    def write(self, view: str, day: DayRows, rows: int) -> None:
        if self.redis is None:
            sqlite_store.write_day(self.store, view, encoded_day(self.cfg, day), rows)
        else:
            redis_store.write_day(self.redis, self.namespace(view), encoded_day(self.cfg, day),
                                  self.cfg.feast.write_batch_rows)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def write_partition(cfg: Config, run_date: date, method: str | None = None, store=None, table=None,
                    writer: Writer | None = None) -> WriteResult:
    """Write the run_date partition into the namespace no reader looks at, switch the readers to
    it, then remove the one they read before; no gate (see publish()). table: the day's rows (a
    DayRows, or an Arrow table in memory); None streams them from Delta. writer: the bulk write
    done elsewhere (the Spark executors); None writes from this process."""
    method = method or cfg.feast.publish_method
    if method not in ("fast", "materialize"):
        raise ValueError(f"unknown publish method {method!r}")
    store = store or feast_repo.feature_store(cfg)
    online = _Online(cfg, store)
    try:
        served_before = slots.served_view(store)
        target = slots.other_view(served_before)
        phases: dict[str, float] = {}
        t0 = time.perf_counter()
        if online.holds(target):  # what a killed publish (or a killed removal) left there
            log.info("emptying %s first: a publish before this one stopped while it held rows", target)
            online.clean(target)
        online.mark(target, run_date)
        t1 = time.perf_counter()
        phases["prepare"] = t1 - t0
        if method == "materialize":
            start, end = slots.day_interval(run_date)
            with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress bars
                store.materialize(start_date=start, end_date=end, feature_views=[target])
            rows = getattr(table, "num_rows", -1)  # an Arrow table's; Feast's materialize does not count
        else:
            day = day_rows(cfg, run_date, table)
            rows = check_keys(cfg, day)
            if writer is not None:
                written = writer(cfg, run_date, online.namespace(target))
                if written != rows:
                    raise RuntimeError(f"{run_date}: the executors wrote {written} rows of {rows}; nothing switched: "
                                       "rerun the publish")
            else:
                online.write(target, day, rows)
        t2 = time.perf_counter()
        phases["write"] = t2 - t1
        kill_point("publish:before-switch")
        slots.switch(store, target, run_date, record=method == "fast")
        t3 = time.perf_counter()
        phases["switch"] = t3 - t2
        log.info("published %s: %s rows into %s in %.2fs via %s; readers switched from %s", run_date, rows, target,
                 t3 - t0, method, served_before)
        kill_point("publish:after-switch")
        retired = 0
        if online.holds(served_before):
            time.sleep(cfg.feast.switch_grace_s)  # until no reader's cached registry names it
            retired = online.clean(served_before)
        phases["retire"] = time.perf_counter() - t3
    finally:
        online.close()
    return WriteResult(rows=rows, seconds=t3 - t0, method=method, view=target, phases=phases, retired_keys=retired)


def publish(cfg: Config, run_date: date, *, method: str | None = None, skip_gate: bool = False,
            writer: Writer | None = None) -> PublishResult:
    """Gate, then write_partition, then log."""
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
        slots.served_view(store)
    except Exception:  # Feast's *NotFoundException: the first publish into this registry
        feast_repo.apply(cfg, store)
    newest = slots.served_day(store)
    if newest is not None and newest > run_date:
        msg = (f"{written_not_served(newest)}: {run_date} not pushed online, the online store already serves a "
               f"newer day ({newest})")
        log.warning("%s", msg)
        log_publish(cfg, run_date, status="skipped", method=method, rows=0,
                    seconds=time.perf_counter() - t0, gate=gate, message=msg)
        return PublishResult(run_date, 0, time.perf_counter() - t0, method, cfg.feast.online_store,
                             "skipped", gate, read_s)
    version = gate.model_version if gate else ",".join(sorted(day_figures(today, cfg.model.embedding_dim).versions))
    now = served(cfg)
    switched_from = now.model_version if now and now.model_version and now.model_version != version else None
    if switched_from:
        log.warning("model version switch on %s: %s -> %s", run_date, switched_from, version)
    res = write_partition(cfg, run_date, method, store=store, table=today, writer=writer)
    rows = res.rows if res.rows >= 0 else (gate.rows if gate else -1)
    log_publish(cfg, run_date, status="published", method=method, rows=rows, seconds=res.seconds, gate=gate,
                model_version=version, switched_from=switched_from, view=res.view)
    return PublishResult(run_date, rows, res.seconds, method, cfg.feast.online_store, "published", gate, read_s,
                         switched_from, version, res.view, res.phases)
