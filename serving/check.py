"""The end-of-day check stage: the day is complete in Delta, and the online store holds what
publish left there (the day itself, or a newer day when publish skipped an older date)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from core import stages, tables
from core.config import Config
from pipelines import lake
from serving import feast_repo, publish_log
from serving.day import ROW, PublishError, day_figures, day_rows, duplicate_keys, gather_rows, matching_rows


class CheckError(RuntimeError):
    """The end-of-run check found the published day inconsistent with the Delta tables."""


def check(cfg: Config, run_date: dt.date, sample_keys: int = 20) -> dict:
    """The day's Delta partition is complete, and the online store holds what publish left there.

    Complete: one embedding per task of task_samples, no duplicate keys, all finite, one model
    version, the one the embed stage logged. Online: when publish pushed the day, sampled keys
    serve this day's embeddings; when publish skipped it because a newer day is online (a
    backfill of an older date), the same keys still serve that newer day's embeddings unchanged.
    No Spark: the partitions are streamed through delta-rs, a batch at a time.
    """
    keys = list(cfg.data.task_key)
    by_key = [(k, "ascending") for k in keys]
    day = day_rows(cfg, run_date)
    day_keys = day.keys(keys)
    tasks = sum(b.num_rows for b in lake.scan_day(cfg, tables.TASK_SAMPLES, run_date, keys[:1], cfg.feast.batch_rows))
    problems = partition_problems(cfg, run_date, day, day_keys, tasks)
    store = feast_repo.feature_store(cfg)
    try:
        outcome = publish_log.latest_outcome(cfg, run_date, store)
    except PublishError as e:
        raise CheckError("; ".join([*problems, str(e)])) from e
    if outcome is None:
        problems.append(f"publish_log has no row for {run_date}: run the publish stage first")
        raise CheckError("; ".join(problems))
    served = outcome.served_date
    sample = day_keys.select(keys).sort_by(by_key).slice(0, sample_keys)
    served_day = day if served == run_date else day_rows(cfg, served)
    served_keys = day_keys if served == run_date else served_day.keys(keys)
    matched = served_keys.take(matching_rows(served_keys, sample, keys)[0])
    dim = cfg.model.embedding_dim
    vectors, _ = gather_rows(served_day, matched[ROW].to_numpy(), dim)
    want = matched.select(keys).append_column(
        tables.EMBEDDING, pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim))
    want = want.sort_by(by_key).to_pandas()
    if len(want):
        problems += online_mismatch(cfg, store, want, keys, served)
    if problems:
        raise CheckError("; ".join(problems))
    return {"stage": stages.CHECK, "rows": day_keys.num_rows, "sampled_lookups": len(want), "online": outcome.describe()}


def partition_problems(cfg: Config, run_date: dt.date, day, day_keys: pa.Table, tasks: int) -> list[str]:
    """What is wrong with the run_date partition of meta_embeddings ([] when it is complete).
    day: its serving.day.DayRows; day_keys: day.keys(task key)."""
    keys = list(cfg.data.task_key)
    rows = day_keys.num_rows
    duplicates = duplicate_keys(day_keys, keys)
    figures = day_figures(day, cfg.model.embedding_dim)
    versions = sorted(figures.versions)
    problems = []
    if rows != tasks:
        problems.append(f"meta_embeddings has {rows} rows for {run_date}, task_samples has {tasks} tasks")
    if duplicates:
        problems.append(f"meta_embeddings has {duplicates} duplicate task keys for {run_date}")
    if figures.nan_inf_rows:
        problems.append(f"{figures.nan_inf_rows} embeddings with NaN/inf for {run_date}")
    embedded_with = lake.stage_detail(cfg, "embed", run_date).removeprefix("model=")
    if rows and versions != [embedded_with]:
        problems.append(f"meta_embeddings for {run_date} holds model version(s) {versions}, "
                        f"the embed stage logged {embedded_with or 'none'}")
    return problems


def online_mismatch(cfg: Config, store, want, keys: list[str], served: dt.date) -> list[str]:
    """[] when the online store returns `want`'s embeddings for its keys, else the problem."""
    online = feast_repo.lookup(cfg, want[keys].to_dict("records"), store=store)
    got = [None if v is None else np.asarray(v, dtype=np.float32) for v in online[tables.EMBEDDING]]
    bad = [dict(zip(keys, k)) for k, g, w in zip(want[keys].itertuples(index=False), got, want[tables.EMBEDDING])
           if g is None or g.shape != np.shape(w) or not np.allclose(g, np.asarray(w, dtype=np.float32), atol=1e-6)]
    if not bad:
        return []
    return [f"online store does not serve {served}'s embeddings for {len(bad)} of {len(want)} sampled keys "
            f"(first: {bad[0]})"]
