"""The layering that docs/architecture.md states: every import of a project module runs downward.

The layers are the groups of docs/architecture.md's layout table, from the bottom up.  A module may
import from its own layer or a lower one, at module level or inside a function; an import that only
type checkers run (under ``if TYPE_CHECKING:``) is exempt, as it creates no dependency at run time.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "synthalign"

# The layers in the order of docs/architecture.md's table; each entry is a module or a package prefix.
LAYERS: list[tuple[str, ...]] = [
    ("synthalign._types", "synthalign._version", "synthalign._exports", "synthalign._checks"),
    ("synthalign.worlds",),
    ("synthalign.metrics",),
    ("synthalign.objectives",),
    ("synthalign.theory",),
    ("synthalign.bounds",),
    ("synthalign.registry",),
    ("synthalign._logistic_pairs",),
    ("synthalign.evaluate",),
    ("synthalign.estimators",),
    ("synthalign.store",),
    ("synthalign.stats",),
    ("synthalign.sweeps",),
    ("synthalign.testing",),
    ("synthalign.bridge",),
    # the flat API (`import synthalign as sa`, resolved lazily into the layers below) is what experiments read
    ("synthalign.experiments", "synthalign"),
    ("synthalign.cli", "synthalign.__main__"),
]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name == prefix or (prefix != "synthalign" and name.startswith(prefix + "."))
            if inside and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{name} is in no layer of docs/architecture.md"
    return best


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every project import that runs, skipping the bodies of ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "synthalign" or node.module.startswith("synthalign."):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or (
                        PACKAGE.parent / sub.replace(".", "/")
                    ).is_dir()
                    found.append((node.lineno, sub if is_module else node.module))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "synthalign" or alias.name.startswith("synthalign."):
                    found.append((node.lineno, alias.name))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_layers_are_those_of_the_architecture_document():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (?:\*\*|`)([^`*|]+)(?:\*\*|`) \|", text, flags=re.MULTILINE)
    named = [row.removeprefix("synthalign/").removesuffix(".py").removesuffix("/").replace("/", ".") for row in rows]
    order = [layer_of("synthalign." + name.split(".<")[0]) for name in named]
    assert order == sorted(order), "the table's rows are not in the order of LAYERS"
    assert set(order) >= set(range(len(LAYERS) - 1)), "a layer has no row in docs/architecture.md"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_project_import_runs_downward(path: pathlib.Path):
    importer = module_name(path)
    own = layer_of(importer)
    tree = ast.parse(path.read_text(), filename=str(path))
    upward = [
        f"line {line}: {name} (layer {layer_of(name)} > {own})"
        for line, name in runtime_imports(tree)
        if layer_of(name) > own
    ]
    assert not upward, f"{importer} imports a higher layer: " + "; ".join(upward)


def test_the_check_finds_an_upward_import(tmp_path: pathlib.Path):
    """The check can fail: a function-level import of the registry from a world module is caught."""
    tree = ast.parse("def f():\n    from synthalign.registry import paper\n")
    found = runtime_imports(tree)
    assert found == [(2, "synthalign.registry.paper")]
    assert layer_of(found[0][1]) > layer_of("synthalign.worlds.tabular")
    skipped = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from synthalign.cli import main\n")
    assert runtime_imports(skipped) == []


# Imports inside functions, each with the reason it cannot run at module level.
LAZY_IMPORTS = {
    # `synthalign list` and `synthalign --help` do without torch, which the experiments' options import
    ("synthalign.cli", "synthalign.experiments._common"),
}


def function_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    if inner.module.startswith("synthalign"):
                        found.append((inner.lineno, inner.module))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_level_import_of_the_project_without_a_reason(path: pathlib.Path):
    importer = module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found = function_level_imports(tree)
    lazy = [f"line {line}: {name}" for line, name in found if (importer, name) not in LAZY_IMPORTS]
    assert not lazy, f"{importer} imports project modules inside functions: " + "; ".join(lazy)


# Library modules whose tests live elsewhere, and where.
TESTED_ELSEWHERE = {
    "_exports.py": "test_api_surface.py (the flat API it names)",
    "_types.py": "none: type aliases for annotations only",
    "_version.py": "test_packaging.py (the version the metadata reads)",
    "bridge/_deps.py": "the bridge's tests (each skips without the extra it names)",
    "bridge/_validate.py": "test_bridge_trainers.py and test_bridge_make_trainer.py (bad models and optimizers)",
    "experiments/_common.py": "test_experiment_helpers.py",
    "registry/paper.py": "test_conformance.py (every declaration) and test_newton.py (its analytic derivatives)",
}


def test_every_library_module_has_its_test_module():
    """docs/architecture.md: `tests/test_<module>.py` for each library module (package-prefixed where ambiguous)."""
    tests = ROOT / "tests"
    missing = []
    for path in MODULES:
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name in ("__init__.py", "__main__.py") or relative in TESTED_ELSEWHERE:
            continue
        stem = path.stem.lstrip("_")
        package = "_".join(path.relative_to(PACKAGE).parent.parts)
        names = [f"test_{stem}.py", f"test_{package}_{stem}.py", f"test_experiment_{stem}.py"]
        if not any((tests / name).exists() for name in names):
            missing.append(relative)
    assert not missing, f"no test module for: {missing}"
    assert all((PACKAGE / name).exists() for name in TESTED_ELSEWHERE), "an exemption names no module"
