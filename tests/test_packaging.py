"""The package's metadata: extras, license, type-hint marker, the one place the version is read from.

Read from the repository's own files (pyproject.toml, LICENSE, CHANGELOG.md), so these checks need
no build and take milliseconds.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

import synthalign

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
USES = ("test", "bridge", "trl", "docs", "dist", "lint")
"""The extras named by use; `dev` is all of them and `distributed` the former name of `dist`."""
BASE_IMPORTS = {"numpy", "scipy", "torch", "matplotlib", "tqdm"}


def _requirement_set(requirements: list[str]) -> set[str]:
    return {re.sub(r"\s+", "", requirement).lower() for requirement in requirements}


def test_extras_are_the_uses_dev_and_the_alias():
    assert set(EXTRAS) == {*USES, "dev", "distributed"}


def test_dev_is_exactly_the_union_of_the_other_extras():
    union = set().union(*(_requirement_set(EXTRAS[use]) for use in USES))
    dev = _requirement_set(EXTRAS["dev"])
    assert dev == union, f"dev lacks {sorted(union - dev)}; dev has extra {sorted(dev - union)}"
    assert len(EXTRAS["dev"]) == len(dev), "dev lists a requirement twice"


def test_distributed_is_an_alias_of_dist():
    assert _requirement_set(EXTRAS["distributed"]) == _requirement_set(EXTRAS["dist"])


def test_extras_hold_what_their_use_needs():
    names = {use: {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in EXTRAS[use]} for use in USES}
    assert names["test"] == {"pytest", "hypothesis", "pytest-xdist", "nbclient", "nbformat", "ipykernel"}
    assert names["bridge"] == {"transformers", "accelerate"}
    assert names["trl"] >= {"trl"} | names["bridge"]  # the TRL cross-checks run TRL's trainers on HF models
    assert _requirement_set(EXTRAS["docs"]) == _requirement_set(
        ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "mkdocs-jupyter>=0.24"]
    )
    assert _requirement_set(EXTRAS["dist"]) == {"dask[distributed]>=2024.1"}
    assert names["lint"] == {"ruff"}
    base = {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in PYPROJECT["project"]["dependencies"]}
    assert base == BASE_IMPORTS


def _third_party_imports(path: pathlib.Path) -> set[str]:
    """Top-level names of the modules `path` imports at import time (not inside functions), minus stdlib."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:  # module level only: imports inside functions are lazy by design
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in ("synthalign", "__future__")}


def test_the_base_install_imports_everything_but_the_optional_subpackages():
    # synthalign.bridge imports transformers/accelerate lazily; synthalign.testing needs hypothesis (test extra).
    optional = {"testing"}
    offending = {}
    for path in sorted((REPO / "synthalign").rglob("*.py")):
        parts = path.relative_to(REPO / "synthalign").parts
        if parts[0] in optional:
            continue
        extra = _third_party_imports(path) - BASE_IMPORTS
        if extra:
            offending[str(path.relative_to(REPO))] = sorted(extra)
    assert not offending, f"modules importing beyond the base dependencies at import time: {offending}"


def test_license_file_is_the_apache_2_license_the_metadata_names():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    # The full text: its nine sections and its end, not a one-line notice.
    sections = re.findall(r"^\s+(\d)\. (\w[\w ]*)\.", text, flags=re.MULTILINE)
    assert [number for number, _ in sections] == [str(k) for k in range(1, 10)]
    assert [title for _, title in sections][:3] == [
        "Definitions",
        "Grant of Copyright License",
        "Grant of Patent License",
    ]
    assert "END OF TERMS AND CONDITIONS" in text


def test_type_hint_marker_ships_with_the_package():
    assert (REPO / "synthalign" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["synthalign"]


def test_version_is_read_from_one_place():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "synthalign._version.__version__"}
    version = synthalign.__version__
    pattern = re.compile(rf"(?<![\d.]){re.escape(version)}(?![\d])")
    sources = [*sorted((REPO / "synthalign").rglob("*.py")), REPO / "pyproject.toml", *sorted(REPO.glob("scripts/*"))]
    holders = [str(p.relative_to(REPO)) for p in sources if p.is_file() and pattern.search(p.read_text("utf-8"))]
    assert holders == ["synthalign/_version.py"]


def test_changelog_has_the_current_version_and_an_unreleased_section():
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert synthalign.__version__ in headings
