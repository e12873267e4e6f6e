"""Option types and groups that several commands share."""

from __future__ import annotations

import argparse
import datetime as dt


def date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interactions", help="interactions file or folder (Parquet, CSV or Delta); overrides config")
    p.add_argument("--features", help="entity features file or folder; overrides config ('' = none)")


def inputs(args, cfg):
    """The run's inputs from the config and --interactions / --features, schema-checked before Spark starts."""
    from pipelines.labeled import resolve_inputs

    return resolve_inputs(cfg, getattr(args, "interactions", None), getattr(args, "features", None))


def say(line: str) -> None:
    print(line, flush=True)
