"""The public surface: every public module declares `__all__`, and every name it lists exists."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import synthalign

PACKAGE = pathlib.Path(synthalign.__file__).resolve().parent
OPTIONAL = {"synthalign.bridge"}  # needs the `bridge` extra


def _public_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts[1:]):  # private modules and __main__
            continue
        names.append(".".join(parts))
    return names


MODULES = _public_modules()


def test_the_package_has_public_modules():
    assert "synthalign.metrics" in MODULES and "synthalign.worlds.tabular" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_every_public_module_declares_all_and_every_listed_name_exists(name):
    if any(name == o or name.startswith(o + ".") for o in OPTIONAL):
        pytest.importorskip("transformers")
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__ list"
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ repeats a name"


def _unannotated(path: pathlib.Path) -> list[str]:
    """Public functions and methods in `path` with a parameter or return left unannotated."""
    gaps = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.name.startswith("_") and child.name not in ("__init__", "__call__"):
                    continue
                args = child.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                if in_class and params and params[0].arg in ("self", "cls"):
                    params = params[1:]
                missing = [p.arg for p in params if p.annotation is None]
                missing += [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None and a.annotation is None]
                if child.returns is None and child.name != "__init__":
                    missing.append("return")
                if missing:
                    gaps.append(f"{path.relative_to(PACKAGE.parent)}:{child.lineno} {prefix}{child.name}: {missing}")

    visit(ast.parse(path.read_text(encoding="utf-8")), "", False)
    return gaps


def test_every_public_function_and_method_is_fully_annotated():
    gaps = [gap for path in sorted(PACKAGE.rglob("*.py")) for gap in _unannotated(path)]
    assert not gaps, "unannotated public signatures:\n" + "\n".join(gaps)
