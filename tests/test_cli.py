"""`metaemb` is the one command: its tree, its help, and every command docker-compose.yml runs."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from metaemb import cli

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE = PROJECT_ROOT / "docker-compose.yml"
USER_COMMANDS = {"demo", "generate", "validate", "run", "train", "evaluate", "lookup", "export", "score", "serve",
                 "feast", "apply", "status", "bench", "airflow"}
SUBCOMMANDS = {("bench",): {"finetune", "pipeline", "publish", "online"}, ("feast",): {"render", "apply"}}
# What a help text may call a file: a path with a folder, or a name with a file extension.
FILE_LIKE = re.compile(r"(?<![\w${<])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\.(?:toml|py|sh|ya?ml|example|json|cfg))\b")
GENERATED = {"report.json"}  # outputs a command writes, not inputs it reads


def _run_metaemb(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "metaemb", *args], capture_output=True, text=True,
                          cwd=str(PROJECT_ROOT), env=env, timeout=timeout)


def _all_help() -> dict[str, str]:
    parser = cli.build_parser()
    texts = {"metaemb": parser.format_help()}
    for path, p in cli.subparsers(parser):
        texts["metaemb " + " ".join(path)] = p.format_help()
    return texts


def test_help_lists_every_user_command():
    out = _run_metaemb("--help")
    assert out.returncode == 0, out.stderr
    tree = {path for path, _ in cli.subparsers(cli.build_parser())}
    assert {p[0] for p in tree} == USER_COMMANDS
    for name in USER_COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", out.stdout, re.M), f"`metaemb --help` does not describe {name}"
    for parent, children in SUBCOMMANDS.items():
        assert {p[-1] for p in tree if p[:-1] == parent} == children
        sub = _run_metaemb(*parent, "--help")
        assert sub.returncode == 0 and all(c in sub.stdout for c in children), sub.stdout + sub.stderr


def test_airflow_help_is_airflow_envs():
    out = _run_metaemb("airflow", "--help")
    assert out.returncode == 0, out.stderr
    for sub in ("init", "dags-test", "backfill", "env", "airflow"):
        assert sub in out.stdout, out.stdout


def test_airflow_passes_the_top_level_config_on():
    from metaemb.commands import airflow as airflow_command

    args = argparse.Namespace(config="a.toml", args=["backfill", "2026-10-24", "2026-10-30"])
    assert airflow_command.forwarded(args) == ["--config", "a.toml", "backfill", "2026-10-24", "2026-10-30"]
    own = argparse.Namespace(config="a.toml", args=["--config", "b.toml", "init"])
    assert airflow_command.forwarded(own) == ["--config", "b.toml", "init"]


def test_airflow_env_through_the_script_with_its_config(tmp_path):
    """scripts/airflow.sh --config X env: the script's --config reaches `metaemb airflow`."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[airflow]\nhome = "{tmp_path / "af"}"\n')
    out = subprocess.run([str(PROJECT_ROOT / "scripts" / "airflow.sh"), "--config", str(cfg), "env"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "METAEMB_PYTHON": sys.executable, "PYTHONPATH": str(PROJECT_ROOT)})
    assert out.returncode == 0, out.stderr
    assert f"export AIRFLOW_HOME={tmp_path / 'af'}" in out.stdout.splitlines()
    assert f"export METAEMB_CONFIG={cfg}" in out.stdout.splitlines()


def test_no_help_cites_a_missing_file():
    texts = _all_help()
    texts["metaemb airflow --help"] = _run_metaemb("airflow", "--help").stdout
    missing = []
    for where, text in texts.items():
        for name in FILE_LIKE.findall(text.replace("\n", " ")):
            if name not in GENERATED and not (PROJECT_ROOT / name).exists():
                missing.append(f"{where}: {name}")
    assert not missing, missing


def test_help_file_check_can_fail():
    assert FILE_LIKE.findall("TOML config file (see metaemb.toml.example)") == ["metaemb.toml.example"]
    assert FILE_LIKE.findall("runs scripts/airflow.sh and ./metaemb.toml") == ["scripts/airflow.sh", "./metaemb.toml"]


# ------------------------------------------------------------------ docker-compose.yml


def _project_services() -> dict[str, dict]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return {name: svc for name, svc in doc["services"].items() if "build" in svc}


def _compose_commands() -> list[tuple[str, list[str]]]:
    """(where, argv): each project-image service's command, and the usage lines in the header."""
    found = [(f"service {name}", list(svc["command"])) for name, svc in _project_services().items()]
    for line in COMPOSE.read_text().splitlines():
        m = re.match(r"#\s+docker compose exec (\S+) (.+)$", line)
        if m:
            found.append((f"header: {line.strip()}", shlex.split(m.group(2))))
    return found


def test_compose_runs_project_commands_only():
    commands = _compose_commands()
    assert len(commands) >= 6, commands
    for where, argv in commands:
        assert argv[0] in ("scripts/airflow.sh", ".venv/bin/spark-class", ".venv/bin/metaemb"), \
            f"{where}: unknown program {argv[0]}"


@pytest.mark.parametrize("where, argv", [c for c in _compose_commands() if c[1][0] == ".venv/bin/metaemb"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_compose_metaemb_command_exists(where, argv):
    """The metaemb subcommand a service runs, with every option it passes in that command's --help."""
    out = _run_metaemb(argv[1], "--help")
    assert out.returncode == 0, f"{where}: metaemb {argv[1]} --help exited {out.returncode}\n{out.stderr[-2000:]}"
    for option in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        assert option in out.stdout, f"{where}: {option} is no option of metaemb {argv[1]}"


def _airflow_sh(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "m.toml"
    if not cfg.exists():
        cfg.write_text(f'[airflow]\nhome = "{tmp_path / "airflow"}"\n')
    env = {**os.environ, "METAEMB_PYTHON": sys.executable, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([str(PROJECT_ROOT / "scripts" / "airflow.sh"), "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(PROJECT_ROOT))


@pytest.mark.parametrize("where, argv", [c for c in _compose_commands() if c[1][0] == "scripts/airflow.sh"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_compose_airflow_command_exists(tmp_path, where, argv):
    """`--help` of the command (metaemb's or Airflow's own CLI), and its options are in that help."""
    args = argv[1:]
    command = args[:1]  # a metaemb helper (init, backfill ...) or any airflow command
    out = _airflow_sh(tmp_path, *command, "--help")
    assert out.returncode == 0, f"{where}: {' '.join(command)} --help exited {out.returncode}\n{out.stderr[-2000:]}"
    help_text = out.stdout
    assert help_text.strip(), where
    if command == ["dags"]:  # a group: its subcommand must be listed
        assert re.search(rf"\b{args[1]}\b", help_text), f"{where}: airflow dags has no {args[1]}"
    for option in (a.split("=")[0] for a in args if a.startswith("--")):
        assert option in help_text, f"{where}: {option} is no option of {' '.join(command)}"


@pytest.mark.parametrize("where, argv", [c for c in _compose_commands() if c[1][0] == ".venv/bin/spark-class"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_compose_spark_class_exists(where, argv):
    """The venv's spark-class is there (the image runs the same set-up) and so is the class it starts."""
    venv_bin = Path(sys.executable).parent
    assert os.access(venv_bin / "spark-class", os.X_OK), f"{where}: no spark-class in {venv_bin}"
    import pyspark

    entry = argv[1].replace(".", "/") + ".class"
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-core_*.jar"))
    assert jars and any(entry in zipfile.ZipFile(j).namelist() for j in jars), f"{where}: no {argv[1]} in {jars}"


def test_help_and_airflow_start_without_torch():
    code = ("import sys; from metaemb import cli; cli.build_parser().parse_args(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'pyspark', 'feast') if m in sys.modules))")
    for argv in (["lookup", "k"], ["airflow", "env"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                             cwd=str(PROJECT_ROOT), env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        assert out.returncode == 0 and out.stdout.strip() == "[]", (argv, out.stdout, out.stderr)
