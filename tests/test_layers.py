"""The package layers, the frameworks each layer knows and the absence of import cycles: the
import-linter contracts in pyproject.toml ([tool.importlinter]), checked on the source (grimp
reads every import statement, function-local ones included; nothing is imported). Also what no
contract says: a package's own modules never import it back, every package is installed and
copied into the image, and the tests import only modules that exist.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
ROOTS = PYPROJECT["tool"]["importlinter"]["root_packages"]
CONTRACTS = [c["name"] for c in PYPROJECT["tool"]["importlinter"]["contracts"]]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def project_packages() -> list[str]:
    return PYPROJECT["tool"]["setuptools"]["packages"]


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the project tree under root (its packages first on the path)."""
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
                          capture_output=True, text=True, cwd=str(root), timeout=120,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)})


def cycles_through_a_package(graph) -> list[list[str]]:
    """Import chains that lead a module back to itself. acyclic_siblings compares siblings only;
    this also finds a package whose __init__ re-exports a module that imports the package."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                found.append([importer, *back])
    return found


def test_contracts_hold():
    out = lint(PROJECT_ROOT)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    for name in CONTRACTS:
        assert f"{name} KEPT" in out.stdout, (name, out.stdout[-3000:])


def test_every_top_level_package_is_under_contract():
    assert set(ROOTS) == {p.split(".")[0] for p in project_packages()}


def test_no_module_imports_its_package_back():
    graph = grimp.build_graph(*ROOTS, cache_dir=None)
    assert cycles_through_a_package(graph) == []


def test_every_package_is_installed():
    """pyproject's packages list names every folder with an __init__.py (subpackages too)."""
    listed = set(project_packages())
    on_disk = {".".join(f.parent.relative_to(PROJECT_ROOT).parts)
               for top in {p.split(".")[0] for p in listed} for f in (PROJECT_ROOT / top).rglob("__init__.py")}
    top_level = {f.parent.name for f in PROJECT_ROOT.glob("*/__init__.py") if f.parent.name != "tests"}
    assert on_disk | top_level == listed, f"pyproject [tool.setuptools] packages differs: {sorted(listed)}"


def test_no_test_folder_shadows_a_project_package():
    """pytest imports tests/X/__init__.py as package X: tests/pipelines/ would hide pipelines/."""
    tops = {p.split(".")[0] for p in project_packages()}
    shadowing = sorted(f.parent.name for f in (PROJECT_ROOT / "tests").rglob("__init__.py") if f.parent.name in tops)
    assert not shadowing, f"test folders named like project packages have an __init__.py: {shadowing}"


def test_image_copies_every_package():
    """The project image (Dockerfile) holds every top-level package the code imports."""
    copied = set(re.findall(r"^COPY (\S+) \1$", (PROJECT_ROOT / "Dockerfile").read_text(), re.M))
    tops = {p.split(".")[0] for p in project_packages()}
    assert tops <= copied, f"Dockerfile does not COPY {sorted(tops - copied)}"


def test_tests_import_modules_that_exist():
    tops = set(ROOTS)
    problems = []
    for f in sorted((PROJECT_ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                wanted = [n for n in names if n.split(".")[0] in tops]
                # `from a import b`: b is a module of a, or a name in it (then a itself must exist)
                missing = [n for n in wanted[:1] if importlib.util.find_spec(n) is None]
            elif isinstance(node, ast.Import):
                missing = [a.name for a in node.names
                           if a.name.split(".")[0] in tops and importlib.util.find_spec(a.name) is None]
            else:
                continue
            problems += [f"{f.relative_to(PROJECT_ROOT)}:{node.lineno} imports {m}, which is no module" for m in missing]
    assert not problems, "\n".join(problems)


# The checks themselves can fail: a bad import written into a copy of the project is reported.

def _copy_with(tmp_path: Path, additions: dict[str, str]) -> Path:
    root = tmp_path / "project"
    for top in ROOTS:
        shutil.copytree(PROJECT_ROOT / top, root / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    for module, line in additions.items():
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = root / module.replace(".", "/") / "__init__.py"
        path.write_text(path.read_text() + f"\n\ndef _bad():\n    {line}\n")
    return root


@pytest.mark.parametrize("module, bad_line, contract", [
    ("core.config", "from pipelines import spark", "Layers: each imports only layers below it"),
    ("serving.publish", "from metaemb.cli import main", "Layers: each imports only layers below it"),
    ("models.blocks", "from core import config", "models is pure PyTorch"),
    ("pipelines.lake", "import feast", "pipelines: Spark, Delta, delta-rs and torch"),
    ("serving.day", "import torch", "serving: Feast over the pipelines' tables"),
    ("feature_repo.definitions", "from pipelines import lake", "feature_repo only declares"),
    ("pipelines.lake", "from pipelines import samples", "No cycles between the modules or subpackages"),
])
def test_a_bad_import_breaks_its_contract(tmp_path, module, bad_line, contract):
    out = lint(_copy_with(tmp_path, {module: bad_line}))
    broken = re.search(rf"^({re.escape(contract)}[^\n]*) BROKEN$", out.stdout, re.M)
    assert out.returncode != 0 and broken, out.stdout[-4000:] + out.stderr[-2000:]
    assert module.rsplit(".", 1)[-1] in out.stdout.split("Broken contracts", 1)[-1], out.stdout[-4000:]
    kept = [name for name in CONTRACTS if f"{name} BROKEN" in out.stdout]
    assert kept == [broken.group(1)], f"other contracts broke too: {kept}"


def test_the_package_cycle_check_can_fail(tmp_path):
    """models/__init__ re-exporting from finetune, whose kernel imports the package back."""
    root = _copy_with(tmp_path, {"models": "from models.finetune import finetune_embed",
                                 "models.kernel": "from models import finetune_embed"})
    code = ("import json, sys, grimp, test_layers; "
            "print(json.dumps(test_layers.cycles_through_a_package(grimp.build_graph(*sys.argv[1:], cache_dir=None))))")
    out = subprocess.run([sys.executable, "-c", code, *ROOTS], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": f"{root}:{Path(__file__).parent}"}, cwd=str(root))
    assert out.returncode == 0, out.stderr[-3000:]
    cycles = json.loads(out.stdout)
    assert any(c[0] == "models" and c[-1] == "models" and "models.kernel" in c for c in cycles), cycles
