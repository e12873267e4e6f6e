"""The publish gate: figures of a run_date's embeddings against the previous published day, and
GateError (with every figure) when one is out of [gate] bounds. Nothing is published then.

Checked: one model version in the partition, NaN/inf, lengths, an empty day, the row count vs
the previous published day, the mean embedding norm, and the day-over-day mean cosine drift on
common keys when that day has the same model version (a version switch skips drift: two models'
embeddings are not comparable). Every figure is computed batch by batch (serving.day.DayRows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from core.config import Config
from serving.day import DayRows, day_figures, day_rows, gather_rows, matching_rows, rows_in_batches
from serving.publish_log import previous_published


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
    prev_version: str | None = None  # of prev_run_date; drift is compared only when it equals model_version
    read_s: float = 0.0  # one streamed read of the day's embeddings (the figures' pass)
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
            if self.version_switch:
                parts.append(f"model_version={self.model_version} (prev {self.prev_version}: drift not compared)")
        return ", ".join(parts)

    @property
    def version_switch(self) -> bool:
        return self.prev_version is not None and self.prev_version != self.model_version


def _mean_cosine(keys: list[str], today: DayRows, before: DayRows, dim: int,
                 span: int) -> tuple[int, float | None]:
    """(common keys, mean cosine over those whose both vectors are non-zero) of two days.

    Matched through the days' keys and row numbers (row numbers are positions, so today's
    come out increasing). For `span` pairs at a time, today's vectors are gathered (float32,
    one pass over today) and the day before is streamed past them (one pass), so memory is
    bounded by span, not by the days."""
    ia, ib = matching_rows(today.keys(keys), before.keys(keys), keys)
    total, counted = 0.0, 0
    for lo in range(0, len(ia), span):
        a, a_ok = gather_rows(today, ia[lo: lo + span], dim)
        order = np.argsort(ib[lo: lo + span], kind="stable")
        for first, good, vb in rows_in_batches(before, ib[lo: lo + span][order], dim):
            pos = order[first + good]
            va = a[pos].astype(np.float64)
            na, nb = np.sqrt((va * va).sum(1)), np.sqrt((vb * vb).sum(1))
            use = a_ok[pos] & (na > 0) & (nb > 0)
            total += float(((va[use] * vb[use]).sum(1) / (na[use] * nb[use])).sum())
            counted += int(use.sum())
    return len(ia), (total / counted if counted else None)


def check_gate(cfg: Config, run_date: date, today=None, *, raise_on_failure: bool = True) -> GateReport:
    """Figures of the run_date partition vs the previous published day; GateError if out of bounds.

    today: the day's rows (DayRows, or an Arrow table in memory); None streams
    them from Delta."""
    day = day_rows(cfg, run_date, today)
    dim, g = cfg.model.embedding_dim, cfg.gate
    t = time.perf_counter()
    fig = day_figures(day, dim)
    read_s = time.perf_counter() - t
    versions = sorted(fig.versions)
    rep = GateReport(run_date=run_date, rows=fig.rows, nan_inf_rows=fig.nan_inf_rows,
                     bad_length_rows=fig.bad_length_rows, mean_norm=fig.mean_norm, model_version=",".join(versions),
                     read_s=read_s)
    if rep.rows == 0:
        rep.failures.append("no rows for this run_date (empty day)")
    if len(versions) > 1:
        rep.failures.append(f"the partition holds {len(versions)} model versions ({', '.join(versions)}); an online "
                            f"reader must see one per day: rerun `metaemb run --date {run_date} --stages "
                            "embed,publish,check` (embed writes the whole date with one checkpoint)")
    if rep.nan_inf_rows:
        rep.failures.append(f"{rep.nan_inf_rows} embeddings are null or hold NaN/inf")
    if rep.bad_length_rows:
        rep.failures.append(f"{rep.bad_length_rows} embeddings are not {dim} long")
    if rep.rows and not (g.min_mean_norm <= rep.mean_norm <= g.max_mean_norm):
        rep.failures.append(f"mean embedding norm {rep.mean_norm:.4g} outside "
                            f"[{g.min_mean_norm:g}, {g.max_mean_norm:g}]")

    prev = previous_published(cfg, run_date)
    if prev is not None and rep.rows:
        rep.prev_run_date, rep.prev_rows = prev.run_date, prev.rows
        rep.prev_version = prev.model_version  # None (logged without one): compared as before
        rep.row_ratio = rep.rows / rep.prev_rows if rep.prev_rows else float("inf")
        if not (g.min_row_ratio <= rep.row_ratio <= g.max_row_ratio):
            rep.failures.append(
                f"row count {rep.rows} vs {rep.prev_rows} on {rep.prev_run_date}: ratio "
                f"{rep.row_ratio:.4g} outside [{g.min_row_ratio:g}, {g.max_row_ratio:g}]")
        if not rep.nan_inf_rows and not rep.bad_length_rows and not rep.version_switch:
            before = day_rows(cfg, rep.prev_run_date)
            rep.common_keys, rep.mean_cosine = _mean_cosine(list(cfg.data.task_key), day, before, dim,
                                                            span=4 * cfg.feast.batch_rows)
            if rep.common_keys and rep.mean_cosine is not None:
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
