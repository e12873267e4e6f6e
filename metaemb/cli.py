"""`metaemb` command line: the one entry point a user runs, and the same stage code the
Airflow DAGs run (metaemb.daily).

Every command reads one config (--config PATH, else $METAEMB_CONFIG, else ./metaemb.toml,
else the built-in defaults: Spark local[*], Delta under var/lake, Feast on SQLite).
Commands whose options live in a heavier module (evaluate, bench, airflow ...) import it
only when that command is run or its help is asked for, so `metaemb --help` and
`metaemb airflow ...` start without torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys
import time

from core import config as config_mod

LAZY = "lazy_module"  # parser default: the module whose add_arguments fills this subparser

log = logging.getLogger("metaemb")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _say(line: str) -> None:
    print(line, flush=True)


# --- commands -------------------------------------------------------------------------

def cmd_generate(args, cfg) -> int:
    from metaemb.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(users=args.users, items=args.items, days=args.days, end_date=args.end_date,
                         mean_events_per_user=args.events_per_user, seed=args.seed,
                         snapshot_every_days=args.snapshot_every)
    t = time.perf_counter()
    counts = generate(args.out, spec, progress=_say)
    _say(f"wrote {args.out}/interactions.parquet ({counts['interactions']:,} rows) and "
         f"{args.out}/entity_features.parquet ({counts['entity_features']:,} rows): {counts['users']:,} users, "
         f"{counts['first_date']} .. {counts['last_date']} in {time.perf_counter() - t:.1f}s")
    return 0


def cmd_validate(args, cfg) -> int:
    from pipelines.contract import validate_inputs

    inter = cfg.location(args.interactions or cfg.data.interactions)
    # The config's feature file goes with the config's interactions, not with a file named here.
    feats_value = args.features if args.features is not None else \
        ("" if args.interactions else cfg.data.entity_features)
    reports = validate_inputs(cfg, inter, cfg.location(feats_value) if feats_value else None,
                              run_date=args.date, window_days=args.window_days)
    ok = True
    for r in reports:
        for line in r.lines():
            print(line, file=sys.stdout if r.ok else sys.stderr)
        ok &= r.ok
        if r.ok:
            used = "; ".join(f"{k}: {', '.join(v) or '(none)'}" for k, v in r.used_columns.items())
            _say(f"{r.path}: OK" + (f", {r.rows:,} rows" if r.rows else "") + (f" ({used})" if used else ""))
    return 0 if ok else 2


def _inputs(args, cfg):
    from pipelines.labeled import resolve_inputs

    return resolve_inputs(cfg, getattr(args, "interactions", None), getattr(args, "features", None))


def cmd_run(args, cfg) -> int:
    from metaemb.daily import STAGES, run_daily
    from pipelines import lake
    from pipelines.spark import get_spark

    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    inputs = _inputs(args, cfg)  # schema faults stop here, before Spark starts
    lake.check_storage(cfg)
    spark = get_spark(cfg)
    for day in _dates(args):
        run_daily(spark, cfg, day, inputs, stages=stages, model_version=args.model_version,
                  allow_empty_day=args.allow_empty_day, progress=_say)
    return 0


def _dates(args) -> list[dt.date]:
    end = args.to_date or args.date
    days = (end - args.date).days
    if days < 0:
        raise SystemExit("--to-date is before --date")
    return [args.date + dt.timedelta(days=i) for i in range(days + 1)]


def cmd_train(args, cfg) -> int:
    from pipelines import train as train_job
    from metaemb.daily import train_on
    from pipelines import lake
    from pipelines.spark import get_spark

    inputs = _inputs(args, cfg)
    lake.check_storage(cfg)
    spark = get_spark(cfg)
    if args.skip_prepare:
        result = train_job.run(spark, cfg, args.date, inputs, progress=_say)
    else:
        result = train_on(spark, cfg, args.date, inputs, progress=_say)
    _say(f"trained {cfg.train.mode} on {result['tasks']:,} tasks in {result['seconds']:.1f}s -> model version "
         f"{result['model_version']} ({result['checkpoint']})")
    return 0


def cmd_status(args, cfg) -> int:
    from metaemb.status import status

    return status(cfg, as_json=args.json, expect_date=args.expect_date, plot_path=args.plot, progress=_say)


def cmd_apply(args, cfg) -> int:
    from serving.feast_store import apply

    apply(cfg)
    _say(f"feast apply: project {cfg.feast.project}, online store {cfg.feast.online_store}")
    return 0


def cmd_module(args, cfg) -> int:
    """A command whose code is a module with add_arguments(parser) and run(args[, cfg])."""
    run = importlib.import_module(args.lazy_module).run
    return run(args, cfg) if args.needs_config else run(args)


def cmd_demo(args, cfg) -> int:
    from metaemb.demo import demo

    return demo(cfg, users=args.users, days=args.days, daily_runs=args.daily_runs, fresh=args.fresh, progress=_say)


# --- parser ---------------------------------------------------------------------------

def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interactions", help="interactions file or folder (Parquet, CSV or Delta); overrides config")
    p.add_argument("--features", help="entity features file or folder; overrides config ('' = none)")


def _module_command(sub, name: str, module: str, *, needs_config: bool = True, **kwargs) -> argparse.ArgumentParser:
    """A subcommand run by module.run(args, cfg); its options come from module.add_arguments."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=cmd_module, lazy_module=module, needs_config=needs_config)
    return p


def _fill_lazy(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Call add_arguments for the module commands argv selects (all of them when argv is None)."""
    for path, p in _subparsers(parser):
        module = p.get_default(LAZY)
        if module is None:
            continue
        if argv is not None and not set(path) <= set(argv):
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as e:  # a module is missing pieces: say so when the command is run
            p.set_defaults(import_error=str(e))


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield (*path, name), p
                yield from _subparsers(p, (*path, name))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command tree; with argv, only the module commands argv names are filled in."""
    parser = argparse.ArgumentParser(
        prog="metaemb",
        description="Daily LiMAML meta embeddings: Spark + Delta -> per-task fine-tune -> Feast.",
        epilog="Config: --config PATH, else $METAEMB_CONFIG, else ./metaemb.toml, else built-in defaults.")
    parser.add_argument("--config", help="TOML config file (the defaults, commented: ./metaemb.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="generate data, train, run the daily job for a few dates, show Feast lookups",
                       description="End to end on the embedded defaults: synthetic data -> train -> "
                                   "daily runs -> Feast online store -> lookups and a summary.")
    p.add_argument("--users", type=int, default=3000, help="synthetic tasks (users) (default 3000)")
    p.add_argument("--days", type=int, default=30, help="days of synthetic history (default 30)")
    p.add_argument("--daily-runs", type=int, default=3, help="daily runs over the last dates (default 3)")
    p.add_argument("--fresh", action="store_true", help="delete var/ state of earlier demos first")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="write a synthetic data set with planted per-task preferences",
                       description="Writes OUT/interactions.parquet and OUT/entity_features.parquet.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--end-date", type=_date, default=dt.date(2026, 10, 30), help="last day with events")
    p.add_argument("--events-per-user", type=float, default=30.0, help="mean interactions per user")
    p.add_argument("--snapshot-every", type=int, default=1, help="days between entity feature snapshots")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("validate", help="check input files against the data contract (no Spark)",
                       description="Exit 0 when usable (row faults are listed with counts: a run quarantines "
                                   "them); exit 2 with one line per problem when not.")
    _input_args(p)
    p.add_argument("--date", type=_date, help="check the rows the run for this date checks: the event dates of "
                                              "its window (later rows are a later run's); default: every row, "
                                              "'future' meaning after today (UTC)")
    p.add_argument("--window-days", type=int, help="the window with --date (default: [pipeline] window_days)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="one daily run (the same code the Airflow DAG runs)",
                       description="Stages: labeled -> samples -> embed -> publish -> check; each replaces "
                                   "exactly its date's partition, so reruns are idempotent.")
    p.add_argument("--date", type=_date, required=True, help="run date YYYY-MM-DD (the logical date)")
    p.add_argument("--to-date", type=_date, help="run every date from --date to this one, in order")
    p.add_argument("--stages", help="comma-separated subset of stages (default: all)")
    p.add_argument("--model-version", help="checkpoint version (default: the latest trained)")
    p.add_argument("--allow-empty-day", action="store_true", help="do not fail when the date has no events")
    _input_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train the model (Algorithm 2a) on the window ending --date",
                       description="Builds labeled_interactions and task_samples for --date, trains "
                                   "[train] mode, writes a checkpoint whose content hash is the model version.")
    p.add_argument("--date", type=_date, required=True)
    p.add_argument("--skip-prepare", action="store_true", help="task_samples for --date already exist")
    _input_args(p)
    p.set_defaults(func=cmd_train)

    _module_command(sub, "evaluate", "metaemb.commands.evaluate",
                    help="the paper's evaluation protocol (Table 3) on an interactions file")
    _module_command(sub, "lookup", "metaemb.commands.lookup", help="read embeddings from the Feast online store",
                    description="KEY is the task key value (comma-separated for composite keys).")
    _module_command(sub, "export", "metaemb.commands.export",
                    help="write a checkpoint's serving artifact (ONNX global block + metadata) beside it")
    _module_command(sub, "score", "metaemb.commands.score",
                    help="probability per row from Feast's embeddings and the model version's serving artifact")
    _module_command(sub, "serve", "metaemb.commands.serve",
                    help="Feast's HTTP feature server (feast serve) on this config's registry and online store")
    _module_command(sub, "feast", "metaemb.commands.feast",
                    help="Feast helpers: render (feature_repo/feature_store.yaml for a config) | apply")

    p = sub.add_parser("apply", help="the same as `metaemb feast apply`")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", help="per-date stage completion, row counts, freshness; non-zero when stale")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--expect-date", type=_date, help="the latest date that should be published (default: yesterday)")
    p.add_argument("--plot", metavar="PNG", help="also write a rows + drift plot per date")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("bench", help="benchmarks: finetune (model throughput), pipeline (the daily job), "
                                     "publish (Feast stock materialize vs the fast path), online (lookup and score latency)")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _module_command(bench, "finetune", "metaemb.bench_finetune", needs_config=False,
                    help="batched fine-tune vs a per-task loop vs this machine's GEMM rate")
    _module_command(bench, "pipeline", "metaemb.bench_pipeline",
                    help="the full daily job on N synthetic tasks: time, rows/s, memory")
    _module_command(bench, "publish", "metaemb.bench_publish",
                    help="N synthetic embeddings published by Feast's materialize and by the fast path")
    _module_command(bench, "online", "metaemb.bench_online",
                    help="p50/p99 latency of Feast lookups (SDK, HTTP server) and of score, SQLite and Redis")

    # Options belong to airflow_env: '+' as prefix lets every '-' option through to it.
    _module_command(sub, "airflow", "metaemb.commands.airflow", needs_config=False, add_help=False,
                    prefix_chars="+", usage="metaemb [--config PATH] airflow COMMAND ...  (metaemb airflow --help)",
                    help="Airflow on this machine: init | dags-test | backfill | env | start | stop | status | "
                         "airflow ARGS (any airflow command)")
    _fill_lazy(parser, argv)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "feast", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if getattr(args, "import_error", None):
        print(f"metaemb {args.command}: unavailable ({args.import_error})", file=sys.stderr)
        return 2
    if args.command == "airflow":  # airflow_env loads the config and reports its own errors
        return cmd_module(args, None)
    from models.checkpoint import CheckpointError
    from pipelines.contract import InputError

    try:
        cfg = config_mod.load(args.config)
        return args.func(args, cfg) or 0
    except (config_mod.ConfigError, InputError, CheckpointError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"metaemb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
