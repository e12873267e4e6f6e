"""`metaemb status`: what ran for which date, read through delta-rs (no Spark start).

Per run date: stages completed, rows per stage, model version, and from publish_log the
publish state, gate figures (row ratio, mean norm, day-over-day drift), a model version switch,
the online store's freshness, and the model version it serves with the date that version went
online. Exit 1 when the expected day is not published (or nothing ran at all).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from core import stages, tables
from core.config import Config
from pipelines import lake
from serving.publish_log import last_view, publish_log

PUBLISH_COLUMNS = ["run_date", "logged_at", "status", "rows", "row_ratio", "mean_norm", "mean_drift", "message",
                   "model_version", "switched_from"]


def collect(cfg: Config) -> list[dict]:
    log = lake.stage_log(cfg, ["stage", "run_date", "rows", "seconds", "detail", "completed_at"])
    if log is None or log.empty:
        return []
    log = log.sort_values("completed_at").groupby(["run_date", "stage"]).last().reset_index()
    pubs = publish_log(cfg, PUBLISH_COLUMNS)
    latest_pub = ({} if pubs is None or pubs.empty else
                  {r.run_date: r for r in pubs.sort_values("logged_at").groupby("run_date").last().reset_index()
                   .itertuples()})
    days = []
    for run_date, group in log.groupby("run_date"):
        by_stage = {r.stage: r for r in group.itertuples()}
        if not ({stages.EMBED, stages.PUBLISH, stages.SAMPLES} & set(by_stage)):
            continue  # a date only computed as part of another run's window
        pub = latest_pub.get(run_date)
        days.append({
            "run_date": str(run_date),
            "stages": [s for s in stages.ALL if s in by_stage],
            "rows": {s: int(by_stage[s].rows) for s in stages.ALL if s in by_stage},
            "model": by_stage[stages.EMBED].detail.removeprefix("model=") if stages.EMBED in by_stage else None,
            "publish": None if pub is None else {
                "status": pub.status, "logged_at": str(pub.logged_at), "rows": int(pub.rows),
                "row_ratio": _num(pub.row_ratio), "mean_norm": _num(pub.mean_norm), "mean_drift": _num(pub.mean_drift),
                "message": pub.message or "", "switched_from": pub.switched_from or None},
        })
    return days


def served_model(cfg: Config) -> dict | None:
    """The model version the online store serves and since when: the first publish of the
    latest unbroken run of that version in publish order (a rollback starts a new run)."""
    pubs = publish_log(cfg, ["run_date", "logged_at", "status", "model_version", "switched_from"])
    pubs = None if pubs is None else pubs[pubs["status"] == "published"]
    if pubs is None or pubs.empty:
        return None
    versions = pubs["model_version"].tolist()
    first = len(versions) - 1
    while first > 0 and versions[first - 1] == versions[-1]:
        first -= 1
    since = pubs.iloc[first]
    return {"model_version": versions[-1], "since_run_date": str(since.run_date), "since": str(since.logged_at),
            "switched_from": since.switched_from or (versions[first - 1] if first else None)}


def finetune_in_use(cfg: Config, version: str) -> str:
    """What the embed stage fine-tunes with: the model's validation choice (its serving
    artifact's metadata), unless [finetune] steps / lr set it."""
    from core.artifact_contract import ArtifactError
    from serving.onnx_runtime import artifact_path, read_metadata

    fixed = [f"{k} = {getattr(cfg.finetune, k)}" for k in ("steps", "lr") if getattr(cfg.finetune, k) is not None]
    try:
        chosen = read_metadata(artifact_path(cfg, version)).get("finetune")
    except ArtifactError as e:
        chosen, why = None, str(e)
    else:
        why = "the model holds no choice"
    if chosen:
        text = ", ".join(f"{b} k={s} lr={lr:g}" for b, s, lr in zip(chosen["buckets"], chosen["steps"], chosen["lr"]))
        text += " (chosen on validation by training)"
    else:
        text = f"the fallback of models.choice ({why})"
    return text + (f"; [finetune] {' and '.join(fixed)} overrides it" if fixed else "")


def publish_state(pub: dict) -> str:
    """published | blocked | "written; online serves D" (a day older than the one online)."""
    if pub["status"] == "skipped" and pub["message"].startswith("written; online serves"):
        return pub["message"].split(":", 1)[0]
    return pub["status"]


def _num(x):
    return None if x is None or pd.isna(x) else round(float(x), 4)


def plot(days: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = [d["run_date"] for d in days]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a.bar(dates, [d["rows"].get("embed", 0) for d in days], color="tab:blue")
    a.set_ylabel("tasks embedded")
    b.plot(dates, [(d["publish"] or {}).get("mean_drift") for d in days], marker="o", color="tab:red")
    b.set_ylabel("day-over-day drift\n(1 - mean cosine)")
    b.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def status(cfg: Config, *, as_json: bool = False, expect_date: dt.date | None = None, plot_path: str | None = None,
           progress=print) -> int:
    expect = expect_date or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))
    lake.check_storage(cfg)
    days = collect(cfg)
    published = [d for d in days if (d["publish"] or {}).get("status") == "published"]
    latest = max((d["run_date"] for d in published), default=None)
    fresh = latest is not None and latest >= expect.isoformat()
    model = served_model(cfg)
    if plot_path and days:
        plot(days, Path(plot_path))
    if as_json:
        progress(json.dumps({"days": days, "latest_published": latest, "served_model": model,
                             "online_view": last_view(cfg),
                             "expected": str(expect), "fresh": fresh}, indent=2))
        return 0 if fresh else 1
    if not days:
        progress(f"no runs recorded under {cfg.table_location(tables.STAGE_LOG)}")
        return 1
    for d in days:
        rows = " ".join(f"{s}={n:,}" for s, n in d["rows"].items())
        pub = d["publish"] or {}
        gate = (f" publish={publish_state(pub)} drift={pub['mean_drift']} norm={pub['mean_norm']} ratio={pub['row_ratio']}"
                if pub else " publish=none")
        if pub.get("switched_from"):
            gate += f" switch={pub['switched_from']}->{d['model']}"
        progress(f"{d['run_date']}  {'+'.join(d['stages']):36s} {rows}  model={d['model']}{gate}")
    when = next((d["publish"]["logged_at"] for d in published if d["run_date"] == latest), None)
    if model and model["model_version"]:
        progress(f"served model version: {model['model_version']} since {model['since_run_date']} (at {model['since']}"
                 + (f"; switched from {model['switched_from']})" if model["switched_from"] else ")"))
        progress(f"fine-tune: {finetune_in_use(cfg, model['model_version'])}")
    view = last_view(cfg)
    progress(f"latest published: {latest or 'none'}" + (f" (at {when})" if when else "")
             + (f" in {view}" if view else "") + f"; expected {expect}: {'OK' if fresh else 'STALE'}")
    if plot_path:
        progress(f"plot: {plot_path}")
    return 0 if fresh else 1
