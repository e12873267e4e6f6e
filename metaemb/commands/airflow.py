"""`metaemb airflow COMMAND ...`: Airflow for metaemb on this machine.

    env                      print `export ...` lines (eval "$(metaemb airflow env)")
    init                     airflow db migrate (idempotent) + the [airflow] pool
    dags-test DATE [DAG]     airflow dags test metaemb_daily DATE (in-process, no services)
    start | stop | status    `airflow standalone` (api-server, scheduler, dag-processor,
                             triggerer) on a free loopback port, in the background
    backfill FROM TO         a backfill of exactly [FROM, TO] through Airflow's REST API; waits
                             and reports each date's state (starts the local services first when
                             no api-server answers, and stops them after in that case)
    ARGS...                  any other airflow command in this environment

The environment (metaemb.airflow.env) takes each setting only when it is not set already, so a
deployment's own settings win. A deployment's api-server is found through AIRFLOW__API__BASE_URL
(token: $METAEMB_AIRFLOW_TOKEN). A `--config` given before `airflow` is passed on;
scripts/airflow.sh is the same command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import sys
from pathlib import Path

from core import config as config_mod

SUBCOMMANDS = ("env", "init", "dags-test", "start", "stop", "status", "backfill")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="an airflow helper or any airflow command")


def forwarded(args) -> list[str]:
    """The argv for main: the top-level --config first, unless the rest names its own."""
    rest = list(args.args)
    if args.config and not _names_config(rest):
        rest = ["--config", args.config, *rest]
    return rest


def _names_config(rest: list[str]) -> bool:
    """main's own --config, which comes before its subcommand."""
    for token in rest:
        if token == "--config" or token.startswith("--config="):
            return True
        if not token.startswith("-"):
            return False
    return False


def run(args, cfg=None) -> int:
    """The config is loaded here, not by the CLI: `metaemb airflow` takes its own --config."""
    return main(forwarded(args))


def parser() -> argparse.ArgumentParser:
    from metaemb.airflow.env import DAILY_DAG_ID

    p = argparse.ArgumentParser(prog="metaemb airflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="metaemb TOML config (default: $METAEMB_CONFIG / ./metaemb.toml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print export lines for this environment")
    sub.add_parser("init", help="airflow db migrate + pool (idempotent)")
    t = sub.add_parser("dags-test", help="airflow dags test DAG DATE, in-process")
    t.add_argument("date")
    t.add_argument("dag_id", nargs="?", default=DAILY_DAG_ID)
    sub.add_parser("start", help="start `airflow standalone` on a free loopback port")
    sub.add_parser("stop", help="stop it")
    sub.add_parser("status", help="is it running, are its components healthy")
    b = sub.add_parser("backfill", help="backfill exactly FROM..TO, wait, report per date")
    b.add_argument("from_date", type=dt.date.fromisoformat)
    b.add_argument("to_date", type=dt.date.fromisoformat)
    b.add_argument("--dag-id", default=DAILY_DAG_ID)
    b.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for completion")
    b.add_argument("--reprocess-behavior", default="completed", choices=("none", "failed", "completed"),
                   help="dates that already ran: rerun all (completed, the default), failed only, or none")
    return p


def main(argv: list[str] | None = None) -> int:
    from metaemb.airflow import services
    from metaemb.airflow.backfill import backfill
    from metaemb.airflow.dags_test import dags_test
    from metaemb.airflow.env import AirflowEnvError, airflow, airflow_env, init

    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    if argv[:1] == ["--config"] and len(argv) > 1:
        config, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--config="):
        config, argv = argv[0].split("=", 1)[1], argv[1:]
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        return airflow(_load(config), *argv, check=False).returncode  # any airflow command, this environment
    args = parser().parse_args((["--config", config] if config else []) + argv)
    cfg = _load(args.config)
    try:
        if args.cmd == "env":
            env = airflow_env(cfg)
            keys = sorted(k for k in env if k.startswith(("AIRFLOW", "METAEMB")) and k != "AIRFLOW__API_AUTH__JWT_SECRET")
            for k in keys + ["PATH"]:
                print(f"export {k}={shlex.quote(env[k])}")
            return 0
        if args.cmd == "init":
            init(cfg)
            return 0
        if args.cmd == "dags-test":
            return dags_test(cfg, args.date, args.dag_id)
        if args.cmd == "start":
            services.start(cfg)
            return 0
        if args.cmd == "stop":
            services.stop(cfg)
            return 0
        if args.cmd == "status":
            return services.status(cfg)
        # backfill: on SIGTERM still stop the services this command started (backfill's finally).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        states = backfill(cfg, args.from_date, args.to_date, dag_id=args.dag_id, timeout=args.timeout,
                          reprocess=args.reprocess_behavior)
        return 0 if states and all(s == "success" for s in states.values()) else 1
    except AirflowEnvError as e:
        print(f"[airflow] error: {e}", file=sys.stderr)
        return 1


def _load(config: str | None) -> config_mod.Config:
    if config:
        os.environ["METAEMB_CONFIG"] = str(Path(config).resolve())
    return config_mod.load(config)
