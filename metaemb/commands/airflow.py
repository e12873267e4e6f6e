"""`metaemb airflow ARGS...`: the Airflow helpers of metaemb.airflow_env, unchanged.

Everything after `airflow` goes to airflow_env as it is (init, dags-test, backfill, env,
start | stop | status, `airflow ARGS...` for any airflow command); `metaemb airflow --help`
lists them. A `--config` given before `airflow` is passed on.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for metaemb.airflow_env")


def forwarded(args) -> list[str]:
    """The argv for airflow_env: the top-level --config first, unless the rest names its own."""
    rest = list(args.args)
    if args.config and not _names_config(rest):
        rest = ["--config", args.config, *rest]
    return rest


def _names_config(rest: list[str]) -> bool:
    """airflow_env's own --config, which comes before its subcommand."""
    for token in rest:
        if token == "--config" or token.startswith("--config="):
            return True
        if not token.startswith("-"):
            return False
    return False


def run(args) -> int:
    from metaemb import airflow_env

    return airflow_env.main(forwarded(args))
