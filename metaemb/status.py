"""`metaemb status`: what ran for which date, read straight from the Delta logs (no Spark start)."""

from __future__ import annotations

import datetime as dt
import json

from metaemb.config import Config
from pipelines import tables
from pipelines.contract import read_table

STAGE_ORDER = ("labeled", "samples", "train", "embed", "publish", "check")


def stage_history(cfg: Config):
    path = cfg.table_path(tables.STAGE_LOG)
    if not (path / "_delta_log").is_dir():
        return None
    df = read_table(path, ["stage", "run_date", "rows", "seconds", "detail", "completed_at"]).to_pandas()
    return df.sort_values("completed_at").groupby(["run_date", "stage"]).last().reset_index()


def status(cfg: Config, *, as_json: bool = False, expect_date: dt.date | None = None, progress=print) -> int:
    expect = expect_date or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))
    hist = stage_history(cfg)
    if hist is None or hist.empty:
        progress(f"no runs recorded under {cfg.table_path(tables.STAGE_LOG)}")
        return 1
    days = []
    for run_date, group in hist.groupby("run_date"):
        by_stage = {r.stage: r for r in group.itertuples()}
        if not ({"embed", "publish", "samples"} & set(by_stage)):
            continue  # a date only computed as part of another run's window
        days.append({
            "run_date": str(run_date),
            "stages": [s for s in STAGE_ORDER if s in by_stage],
            "rows": {s: int(by_stage[s].rows) for s in STAGE_ORDER if s in by_stage},
            "model": by_stage["embed"].detail.removeprefix("model=") if "embed" in by_stage else None,
            "completed_at": str(max(r.completed_at for r in by_stage.values())),
        })
    published = [d["run_date"] for d in days if "publish" in d["stages"]]
    latest = max(published) if published else None
    fresh = latest is not None and latest >= expect.isoformat()
    if as_json:
        progress(json.dumps({"days": days, "latest_published": latest, "expected": str(expect), "fresh": fresh},
                            indent=2))
    else:
        for d in days:
            rows = " ".join(f"{s}={n:,}" for s, n in d["rows"].items())
            progress(f"{d['run_date']}  {'+'.join(d['stages']):40s} {rows}  model={d['model']}")
        progress(f"latest published: {latest or 'none'}; expected {expect}: {'OK' if fresh else 'STALE'}")
    return 0 if fresh else 1
