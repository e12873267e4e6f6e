"""`metaemb evaluate`: the paper's Table 3 protocol on an interactions file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interactions", help="interactions (Parquet/CSV, DESIGN.md schema) or a MovieLens "
                   "RecBole .inter file; default: the config's [data] interactions")
    p.add_argument("--features", help="entity features (Parquet/CSV, DESIGN.md schema) or a MovieLens RecBole "
                   ".user file (age, gender, occupation); optional: IDs and history alone work")
    p.add_argument("--out", default="var/eval", help="output folder for report.json, report.md, *.png")
    p.add_argument("--quick", action="store_true", help="small model, few epochs, small grid (smoke test)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds averaged per method (default 1; 3 for "
                   "mean ± std, ~3x the time)")
    p.add_argument("--epochs", type=int, help="max epochs per training run (best one chosen on validation; default 5, --quick 4)")
    p.add_argument("--max-events", type=int, help="use only the earliest N events (quick looks)")
    p.add_argument("--no-id-block", action="store_true", help="skip the Table 4 runs (a task-ID embedding "
                   "meta block: vanilla and LiMAML; ~2/3 more training time)")


def run(args, cfg) -> int:
    from metaemb.research.evaluate import run_evaluate

    inter = args.interactions or cfg.data.interactions
    if not inter:
        print("evaluate: no interactions given (--interactions PATH or [data] interactions)", file=sys.stderr)
        return 2
    features = args.features if args.features is not None else (None if args.interactions else cfg.data.entity_features)
    inter_path = cfg.path(inter)
    if not inter_path.exists():
        print(f"evaluate: interactions not found: {inter_path}", file=sys.stderr)
        return 2
    out = cfg.path(args.out)
    features_path = cfg.path(features) if features else None
    if features_path is not None and not features_path.exists():
        print(f"evaluate: features not found: {features_path}", file=sys.stderr)
        return 2
    inter_path, features_path = _converted(inter_path, features_path, out)
    rows = run_evaluate(inter_path, out, features_path=features_path, task_key=tuple(cfg.data.task_key), cfg=cfg,
                        seeds=args.seeds, quick=args.quick, epochs=args.epochs, max_events=args.max_events,
                        id_block=not args.no_id_block,
                        progress=lambda s: print(s, flush=True))
    print((Path(out) / "report.md").read_text())
    return 0 if rows else 1


def _converted(inter_path: Path, features_path: Path | None, out: Path) -> tuple[Path, Path | None]:
    """RecBole atomic files (MovieLens .inter / .user) converted once into `out`; others as given."""
    import pandas as pd

    from metaemb.datasets import movielens

    events = None
    if inter_path.suffix == ".inter":
        converted = out / "interactions.parquet"
        events = movielens.to_interactions(inter_path, converted)
        inter_path = converted
    if features_path is not None and features_path.suffix == ".user":
        from metaemb.research.evaluate import read_table

        events = read_table(inter_path) if events is None else events  # the converted file's rows are in hand
        first_event = pd.to_datetime(events["event_timestamp"], utc=True).min()
        converted = out / "entity_features.parquet"
        movielens.to_entity_features(features_path, converted, valid_from=first_event)
        features_path = converted
    return inter_path, features_path
