"""`metaemb demo`: the whole daily flow on the embedded defaults, then lookups through Feast."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections import defaultdict

from core.config import Config, shown


def demo(cfg: Config, *, users: int = 3000, days: int = 30, daily_runs: int = 3, fresh: bool = False,
         progress=print) -> int:
    from metaemb.datasets.synthetic import SyntheticSpec, generate
    from pipelines import labeled
    from metaemb.daily import run_daily, train_on
    from serving.feast_repo import apply, lookup, lookup_line
    from pipelines.spark import get_spark

    started = time.perf_counter()
    seconds: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    if fresh:
        for where in (cfg.location(cfg.pipeline.storage_root), cfg.location(cfg.model.checkpoint_dir)):
            where.delete_tree()
        shutil.rmtree(cfg.path(cfg.feast.sqlite_path).parent, ignore_errors=True)
    spec = SyntheticSpec(users=users, days=days)
    data = cfg.path(cfg.data.interactions)
    t = time.perf_counter()
    if fresh or not data.exists():
        progress(f"== generate: {users:,} users x {days} days of synthetic interactions -> {shown(data.parent)}")
        counts = generate(data.parent, spec, progress=progress)
        rows["generate"] = counts["interactions"]
    seconds["generate"] = time.perf_counter() - t
    progress("== validate inputs (schema, before Spark starts)")
    inputs = labeled.resolve_inputs(cfg)
    progress(f"   context columns: {', '.join(inputs.context_columns)}; meta features: {', '.join(inputs.meta_columns)}")

    t = time.perf_counter()
    progress(f"== feast apply (project {cfg.feast.project}, online store {cfg.feast.online_store})")
    apply(cfg)
    seconds["feast apply"] = time.perf_counter() - t

    t = time.perf_counter()
    progress(f"== start Spark ({cfg.spark.master})")
    spark = get_spark(cfg)
    seconds["spark start"] = time.perf_counter() - t

    last = spec.end_date
    run_dates = [last - dt.timedelta(days=i) for i in range(daily_runs - 1, -1, -1)]
    train_date = run_dates[0] - dt.timedelta(days=1)
    progress(f"== train ({cfg.train.mode}) on the window ending {train_date}")
    t = time.perf_counter()
    r = train_on(spark, cfg, train_date, inputs, progress=progress)
    progress(f"   model version {r['model_version']} ({r['tasks']:,} tasks, {r['seconds']:.1f}s); "
             f"serving artifact {shown(r['artifact'])}")
    seconds["train+window"] += time.perf_counter() - t

    for day in run_dates:
        progress(f"== daily run {day}")
        for r in run_daily(spark, cfg, day, inputs, progress=progress):
            seconds[r["stage"]] += r.get("seconds", 0.0)
            rows[r["stage"]] += r.get("rows", 0)

    progress(f"== lookups through Feast get_online_features ({cfg.feast.online_store})")
    keys = list(cfg.data.task_key)
    sample = [{keys[0]: str(u)} for u in (1, 2, 3, 42, users)] if len(keys) == 1 else []
    df = lookup(cfg, sample)
    for _, row in df.iterrows():
        progress("   " + lookup_line(row, keys))

    if len(keys) == 1:
        t = time.perf_counter()
        show_scores(cfg, data, keys[0], [1, 2, 3, 42], unknown=users + 1, progress=progress)
        seconds["score"] = time.perf_counter() - t

    progress("== summary")
    for stage in seconds:
        progress(f"   {stage:12s} {seconds[stage]:7.1f}s  {rows.get(stage, 0):>10,} rows")
    progress(f"   tasks embedded on {run_dates[-1]}: {rows['embed'] // max(len(run_dates), 1):,} "
             f"(per run, mean); total {time.perf_counter() - started:.1f}s")
    return 0


def show_scores(cfg: Config, interactions, key: str, known: list[int], unknown: int, progress=print) -> None:
    """metaemb score on each user's latest interaction, plus a user with no embedding online."""
    import pandas as pd

    from serving.score import score

    events = pd.read_parquet(interactions)
    latest = events[events[key].isin(known)].sort_values("event_timestamp").groupby(key).tail(1)
    newcomer = latest.head(1).assign(**{key: unknown})
    rows = pd.concat([latest.sort_values(key), newcomer], ignore_index=True)
    result = score(cfg, rows)
    progress(f"== scores: embeddings and model_version through Feast, probability from the serving artifact "
             f"(metaemb score; model {result.model_version})")
    for (_, row), (_, scored) in zip(rows.iterrows(), result.frame.iterrows()):
        progress(f"   {key}={row[key]} item_id={row['item_id']}: p={scored['probability']:.3f} "
                 f"(label {int(row['label'])}, {scored['embedding']} embedding)")
