"""The package layers, checked on the source (an AST walk, nothing imported).

    core          config + Delta table names              imports nothing of the project
    models        LiMAML in PyTorch                       nothing of the project
    pipelines     Spark jobs over Delta                   core, models
    feature_repo  Feast declarations                      core
    serving       Feast publish, gate, lookup, check      core, pipelines, feature_repo
    entry points  metaemb/ (CLI, demo, Airflow helpers,   any layer
                  benchmarks), dags/, pipelines/jobs.py

Every import counts, function-local ones included: a lazy import is still a dependency.
Edges follow the usual module-graph rule (as grimp / import-linter build it):
`from a import b` is an edge to a.b when that is a module, else to a.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# (layer, module prefixes), bottom first. The longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("core",)),
    ("models", ("models",)),
    ("pipelines", ("pipelines",)),
    ("feature_repo", ("feature_repo",)),
    ("serving", ("serving",)),
    ("entry points", ("metaemb", "dags", "pipelines.jobs")),  # jobs.py: the spark-submit application
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
# Which lower layers each layer may use; anything not listed is refused (upward or sideways).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "models": set(),  # pure PyTorch: reads its settings from the objects it is given
    "pipelines": {"core", "models"},
    "feature_repo": {"core"},  # declares only
    "serving": {"core", "pipelines", "feature_repo"},
    "entry points": {"core", "models", "pipelines", "feature_repo", "serving"},
}
# What each layer knows about (the README's layout table): frameworks it may import.
FRAMEWORKS = {"torch", "pyspark", "delta", "feast", "airflow"}
MAY_USE: dict[str, set[str]] = {
    "core": set(),
    "models": {"torch"},
    "pipelines": {"pyspark", "delta", "torch"},  # torch: the fine-tune's thread settings in the workers
    "feature_repo": {"feast"},
    "serving": {"feast", "pyspark"},
    "entry points": FRAMEWORKS,
}


@dataclass(frozen=True)
class Import:
    importer: str
    path: Path
    line: int
    target: str  # a project module, or the top-level name of an outside one

    def where(self) -> str:
        shown = self.path.relative_to(PROJECT_ROOT) if self.path.is_relative_to(PROJECT_ROOT) else self.path
        return f"{shown}:{self.line} ({self.importer})"


def project_packages() -> list[str]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def project_modules() -> dict[str, Path]:
    """module name -> file, for every .py of the top-level packages pyproject installs."""
    modules = {}
    for top in {p.split(".")[0] for p in project_packages()}:
        for f in sorted((PROJECT_ROOT / top).rglob("*.py")):
            parts = f.relative_to(PROJECT_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return modules


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            found.append(Import(module, path, node.lineno, target))
    return found


def layer_of(module: str) -> str | None:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def _is_project(name: str, modules: dict[str, Path]) -> bool:
    return name.split(".")[0] in {m.split(".")[0] for m in modules}


def all_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = project_modules()
    return modules, [i for m, p in modules.items() for i in imports_of(m, p, modules)]


def layer_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        if not _is_project(imp.target, modules):
            used = imp.target.split(".")[0]
            layer = layer_of(imp.importer)
            if used in FRAMEWORKS and used not in MAY_USE[layer]:
                problems.append(f"{imp.where()} imports {imp.target}: layer {layer!r} knows only "
                                f"{sorted(MAY_USE[layer]) or 'the standard library and plain libraries'}")
            continue
        if imp.target not in modules:
            problems.append(f"{imp.where()} imports {imp.target}, which is no module of the project")
            continue
        src, dst = layer_of(imp.importer), layer_of(imp.target)
        if src != dst and dst not in MAY_IMPORT[src]:
            direction = "upward" if RANK[dst] > RANK[src] else "not allowed"
            problems.append(f"{imp.where()} imports {imp.target} ({direction}: layer {src!r} may import "
                            f"{sorted(MAY_IMPORT[src]) or 'nothing of the project'}, not {dst!r})")
    return problems


def import_cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[Import]]:
    """One cycle per strongly connected component of the module graph (Tarjan), as its edges."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        if imp.target in modules and imp.target != imp.importer:
            edges[imp.importer].setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for m in sorted(modules):
        if m not in index:
            visit(m)
    return [_cycle_in(sorted(c), edges) for c in components]


def _cycle_in(component: list[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest path from the component's first module back to itself (breadth-first)."""
    start, members = component[0], set(component)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in edges[v].items():
                if w == start:
                    return paths[v] + [imp]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [imp]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")


def describe_cycle(cycle: list[Import]) -> str:
    return "cycle: " + " -> ".join(f"{imp.where()} imports {imp.target}" for imp in cycle)


# ---------------------------------------------------------------------------------- tests


def test_every_module_has_a_layer():
    modules = project_modules()
    assert modules, "no project modules found"
    assert [m for m in modules if layer_of(m) is None] == []


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


def test_layer_table_only_points_down():
    for layer, allowed in MAY_IMPORT.items():
        assert all(RANK[a] < RANK[layer] for a in allowed), (layer, allowed)


def test_imports_only_point_down():
    modules, imports = all_imports()
    problems = layer_violations(modules, imports)
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    modules, imports = all_imports()
    cycles = import_cycles(modules, imports)
    assert not cycles, "\n".join(describe_cycle(c) for c in cycles)


def test_tests_import_modules_that_exist():
    modules = project_modules()
    problems = []
    for f in sorted((PROJECT_ROOT / "tests").rglob("*.py")):
        name = ".".join(f.relative_to(PROJECT_ROOT).with_suffix("").parts)
        for imp in imports_of(name, f, modules):
            if _is_project(imp.target, modules) and imp.target not in modules:
                problems.append(f"{imp.where()} imports {imp.target}, which is no module of the project")
    assert not problems, "\n".join(problems)


# The checks themselves can fail: a bad import written into a copy of a module is reported.


@pytest.mark.parametrize("module, bad_line, expected", [
    ("core.config", "from pipelines import spark", "upward: layer 'core' may import nothing of the project"),
    ("models.blocks", "from core import config", "not allowed: layer 'models'"),
    ("pipelines.lake", "from serving import publish", "upward: layer 'pipelines'"),
    ("pipelines.lake", "import feast", "layer 'pipelines' knows only"),
    ("serving.publish", "from metaemb.cli import main", "upward: layer 'serving'"),
    ("pipelines.spark", "from pipelines.feast_store import lookup", "which is no module of the project"),
])
def test_layer_check_reports_a_bad_import(tmp_path, module, bad_line, expected):
    modules, imports = all_imports()
    bad = tmp_path / "bad.py"
    bad.write_text(modules[module].read_text() + f"\n\ndef _bad():\n    {bad_line}\n")
    rest = [i for i in imports if i.importer != module]
    problems = layer_violations(modules, rest + imports_of(module, bad, modules))
    assert any(expected in p and module in p and bad_line.split()[1] in p for p in problems), problems


def test_cycle_check_reports_a_cycle(tmp_path):
    modules, imports = all_imports()
    bad = tmp_path / "lake.py"  # pipelines.lake -> pipelines.samples -> pipelines.lake
    bad.write_text(modules["pipelines.lake"].read_text() + "\n\ndef _bad():\n    from pipelines import samples\n")
    rest = [i for i in imports if i.importer != "pipelines.lake"]
    cycles = import_cycles(modules, rest + imports_of("pipelines.lake", bad, modules))
    text = "\n".join(describe_cycle(c) for c in cycles)
    assert "pipelines.lake) imports pipelines.samples" in text and "imports pipelines.lake" in text, text
