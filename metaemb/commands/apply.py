"""`metaemb apply`: the same as `metaemb feast apply`."""

from __future__ import annotations

import argparse

from metaemb.commands import feast


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = feast.APPLY_HELP


def run(args, cfg) -> int:
    return feast.apply(cfg)
