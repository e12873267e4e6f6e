"""`metaemb lookup KEY...`: embeddings read back through Feast's get_online_features."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--show", type=int, default=6, help="embedding values to print (default 6)")


def run(args, cfg) -> int:
    from serving.feast_repo import lookup

    keys = list(cfg.data.task_key)
    rows = [dict(zip(keys, k.split(","))) for k in args.keys]
    if any(len(r) != len(keys) for r in rows):
        raise SystemExit(f"each key must give {len(keys)} comma-separated value(s) for {keys}")
    df = lookup(cfg, rows)
    for _, row in df.iterrows():
        print(format_lookup(row, keys, args.show), flush=True)
    return 0


def format_lookup(row, keys: list[str], show: int = 6) -> str:
    """One line per looked-up task: key, sample count, model version, the first values."""
    import numpy as np

    emb, n = row.get("embedding"), row.get("n_samples")
    key = ",".join(str(row[k]) for k in keys)
    if emb is None or (isinstance(emb, float) and emb != emb):
        return f"{key}: (none: no embedding published)"
    values = np.asarray(emb)
    shown = "[" + ", ".join(f"{x:+.3f}" for x in values[:show]) + (", ...]" if len(values) > show else "]")
    return f"{key}: n_samples={int(n)} model={row.get('model_version')} embedding({len(values)})={shown}"
