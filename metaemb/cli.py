"""`metaemb` command line: the one entry point a user runs. Parser and dispatch only: each
command is a module of metaemb/commands/ (its options in add_arguments, its work in run).

Every command reads one config (--config PATH, else $METAEMB_CONFIG, else ./metaemb.toml,
else the built-in defaults: Spark local[*], Delta under var/lake, Feast on SQLite). The
command modules import their heavy parts (torch, Spark, Feast) only when they run, so
`metaemb --help` and `metaemb airflow ...` start without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core import config as config_mod

# name -> (command module, help), in the order `metaemb --help` lists them.
COMMANDS = {
    "demo": ("demo", "generate data, train, run the daily job for a few dates, show Feast lookups and scores"),
    "generate": ("generate", "write a synthetic data set with planted per-task preferences"),
    "validate": ("validate", "check input files against the data contract (no Spark)"),
    "run": ("run", "one daily run (the same code the Airflow DAG runs)"),
    "train": ("train", "train the model (Algorithm 2a) on the window ending --date"),
    "evaluate": ("evaluate", "the paper's evaluation protocol (Table 3) on an interactions file"),
    "lookup": ("lookup", "read embeddings from the Feast online store"),
    "export": ("export", "write a checkpoint's serving artifact (ONNX global block + metadata) beside it"),
    "score": ("score", "probability per row from Feast's embeddings and the model version's serving artifact"),
    "serve": ("serve", "Feast's HTTP feature server (feast serve) on this config's registry and online store"),
    "feast": ("feast", "Feast helpers: render (feature_repo/feature_store.yaml for a config) | apply"),
    "apply": ("apply", "the same as `metaemb feast apply`"),
    "status": ("status", "per-date stage completion, row counts, freshness; non-zero when stale"),
    "bench": ("bench", "benchmarks: finetune (model throughput), pipeline (the daily job), publish (Feast stock "
                       "materialize vs the fast path), online (lookup and score latency)"),
    "airflow": ("airflow", "Airflow on this machine: init | dags-test | backfill | env | start | stop | status | "
                           "ARGS (any airflow command)"),
}
# Errors that say what is wrong with the input, config or state: one line, exit 2 (-v: traceback).
# The project's own (ConfigError, InputError, CheckpointError, GateError ...) are all of these.
USER_ERRORS = (ValueError, RuntimeError)


def command_module(name: str):
    return importlib.import_module(f"metaemb.commands.{COMMANDS[name][0]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaemb",
        description="Daily LiMAML meta embeddings: Spark + Delta -> per-task fine-tune -> Feast.",
        epilog="Config: --config PATH, else $METAEMB_CONFIG, else ./metaemb.toml, else built-in defaults.")
    parser.add_argument("--config", help="TOML config file (the defaults, commented: ./metaemb.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        if name == "airflow":  # every option after `airflow` is the airflow command's: '+' lets them through
            p = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="+",
                               usage="metaemb [--config PATH] airflow COMMAND ...  (metaemb airflow --help)")
        else:
            p = sub.add_parser(name, help=help_text, description=help_text)
        command_module(name).add_arguments(p)
    return parser


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield (*path, name), p
                yield from subparsers(p, (*path, name))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "feast", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    module = command_module(args.command)
    if args.command == "airflow":  # it loads the config and reports its errors itself
        return module.run(args)
    try:
        cfg = config_mod.load(args.config)
        return module.run(args, cfg) or 0
    except USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"metaemb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
