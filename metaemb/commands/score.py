"""`metaemb score --input FILE`: a probability per row from Feast's embeddings and the serving artifact."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Scores rows as the online model would. FILE (Parquet, CSV or Delta; a local path or s3://bucket/key) "
        "has the task key column(s) "
        "([data] task_key), item_id and the model's context columns. Each task's embedding and model_version "
        "are read through Feast (the online store `metaemb lookup` reads); the probability comes from the "
        "serving artifact <checkpoint_dir>/<version>.onnx of that version (ONNX Runtime). A task with no "
        "embedding online gets the artifact's default embedding. Refused, with nothing written: an online row "
        "of another model version than the artifact's, a missing column, a missing or corrupt artifact, an "
        "unreachable online store. Exit 0 scored, 2 refused.")
    p.add_argument("--input", required=True, metavar="FILE", help="rows to score")
    p.add_argument("--model-version", help="score with this version's artifact; online rows must be of it "
                                           "(default: the version the online rows carry)")
    p.add_argument("--artifact", metavar="PATH", help="an artifact file to use (its version must match the online rows)")
    p.add_argument("--unknown-tasks", choices=("default", "error"), default="default",
                   help="a task with no embedding online: use the artifact's default embedding (default) or refuse")
    p.add_argument("--out", metavar="FILE", help="write the scores here (.csv or .parquet) instead of CSV on stdout")


def run(args, cfg) -> int:
    from serving.onnx_runtime import load_artifact
    from serving.score import score

    held = load_artifact(args.artifact) if args.artifact else None
    result = score(cfg, args.input, model_version=args.model_version, artifact=held, unknown_tasks=args.unknown_tasks)
    frame = result.frame
    if args.out:
        write_scores(frame, args.out)
    else:
        frame.to_csv(sys.stdout, index=False)
    print(f"scored {len(frame):,} rows with model version {result.model_version}: {result.tasks_online:,} task(s) "
          f"embedded online, {result.tasks_default:,} with the default embedding"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr, flush=True)
    return 0


def write_scores(frame, out: str) -> None:
    """CSV or Parquet by suffix, written to a temp name and renamed (never half a file)."""
    import os
    from pathlib import Path

    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
