"""The documentation site: `mkdocs build --strict` passes, the pages exist, and the recipes' code runs.

The site's build (mkdocs.yml) is the test of the docs: warnings are errors, so a broken link, a
nav entry without its page, a missing section of README.md or a docstring griffe cannot parse
fails here.  The recipes' code lives in docs/snippets/recipes/*.py, which the pages include
verbatim; each is executed here at the size the page shows.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import runpy
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "snippets" / "recipes"
EXPERIMENTS = (
    "fig1",
    "rates",
    "onpolicy-gap",
    "strong-base",
    "degeneracy",
    "prop15",
    "gradient-estimators",
    "onpolicy-rates",
    "general-preferences",
    "misspecification",
    "sequence-gap",
)


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "synthalign_docs_hooks", ROOT / "docs" / "_hooks" / "synthalign_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with --strict into a temporary folder (one build for every test of it)."""
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        if importlib.util.find_spec(name.split(".")[0]) is None or importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: the docs build needs mkdocs, mkdocs-material, "
                        "mkdocstrings-python and mkdocs-jupyter (CI installs them)")  # fmt: skip
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    done = subprocess.run(
        [*command, "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    print(f"mkdocs build --strict: {seconds:.1f} s, {len(list(out.rglob('*.html')))} HTML pages")
    return out


def _page(site: pathlib.Path, path: str) -> str:
    page = site / path / "index.html" if path else site / "index.html"
    assert page.is_file(), f"no page {page.relative_to(site)}"
    return page.read_text(encoding="utf-8")


def test_home_getting_started_concepts_architecture(site):
    assert "MkDocs" in _page(site, "")
    getting_started = _page(site, "getting-started")
    assert "synthalign run fig1" in getting_started  # README's quick start, included as it stands
    concepts = _page(site, "concepts")
    for word in ("check_rate", "check_bound", "certificate", "counts"):
        assert word in concepts
    assert "Where new things go" in _page(site, "architecture")


def test_api_reference_is_generated_from_docstrings(site):
    worlds = _page(site, "api/worlds")
    assert 'id="synthalign.worlds.tabular.World"' in worlds
    assert 'id="synthalign.worlds.tabular.World.paper_toy"' in worlds
    objectives = _page(site, "api/objectives")
    assert "eq. 4/5" in objectives  # pmle_loss's formula and equation number
    # The templated docstrings of the f-DPO family are completed, not shown with their placeholder.
    assert "{divergence}" not in objectives
    assert "f-divergence of f-DPO" in objectives
    for page in (
        "registry",
        "evaluate",
        "metrics",
        "estimators",
        "sweeps-stats",
        "theory",
        "testing",
        "bridge",
        "store",
    ):
        assert 'class="doc doc-heading"' in _page(site, f"api/{page}"), page


def test_every_notebook_is_rendered(site):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    index = _page(site, "notebooks")
    for notebook in notebooks:
        page = _page(site, f"notebooks/{notebook.stem}")
        assert "jupyter-wrapper" in page or "jp-Notebook" in page, notebook.name
        assert f"notebooks/{notebook.name}" in index
        assert (site / "notebooks" / notebook.stem / notebook.name).is_file()  # the download


def test_every_experiment_has_a_page(site):
    for name in EXPERIMENTS:
        assert name in _page(site, f"experiments/{name}"), name


def test_recipe_pages_show_the_tested_code(site):
    # Highlighted code is split into tokens: look for one identifier that only the recipe's file uses.
    for page, snippet, identifier in (
        ("recipes/rate-claim", "rate_claim.py", "sqrt_rate"),
        ("recipes/new-loss", "new_loss.py", "stated_minimizer"),
        ("recipes/poor-coverage", "poor_coverage.py", "coverage_coefficient"),
        ("recipes/transformer", "transformer.py", "LlamaForCausalLM"),
    ):
        assert identifier in (RECIPES / snippet).read_text(encoding="utf-8")
        assert identifier in _page(site, page), (page, identifier)


# ------------------------------------------------------------------ the hook's pieces


def test_markdown_section_skips_code_fences_and_stops_at_the_next_heading():
    hooks = _hooks()
    text = "# A\n\nintro\n\n## Quick start\n\n```bash\n# not a heading\nrun\n```\n\n### deeper\n\nx\n\n## Next\n\ny\n"
    assert hooks.markdown_section(text, "Quick start") == "```bash\n# not a heading\nrun\n```\n\n### deeper\n\nx"
    assert hooks.markdown_section(text, "Next") == "y"
    assert hooks.markdown_section(text, "Missing") is None


def test_links_of_included_sections_are_rebased():
    hooks = _hooks()
    text = "![Fig](docs/figure1.png) see [nb](notebooks/a.ipynb) and [web](https://example.org) [here](#x)"
    out = hooks.rebase_links(text, "README.md", "experiments/fig1.md")
    assert "![Fig](../figure1.png)" in out
    assert "nb (`notebooks/a.ipynb`)" in out
    assert "[web](https://example.org)" in out
    assert out.endswith(" here")  # README's own anchors do not exist on the page: the text stays


def test_if_exists_and_fallback_sections():
    hooks = _hooks()
    markdown = (
        "<!-- if-exists README.md -->yes<!-- else -->no<!-- end-if-exists -->"
        "<!-- if-exists no/such/file -->yes<!-- else -->no<!-- end-if-exists -->"
        "<!-- include-section README.md#No such heading -->fallback<!-- end-include-section -->"
    )
    assert hooks.expand(markdown, "index.md") == "yesnofallback"
    nested = (
        "<!-- if-exists README.md -->a<!-- if-exists no/such/file -->b<!-- else -->c<!-- end-if-exists -->d"
        "<!-- else -->e<!-- end-if-exists -->"
    )
    assert hooks.expand(nested, "index.md") == "acd"
    assert hooks.expand(nested.replace("README.md", "no/such/dir"), "index.md") == "e"


# ------------------------------------------------------------------ the recipes, executed


def _run(snippet: str) -> dict:
    return runpy.run_path(str(RECIPES / snippet), run_name="__main__")


def test_recipe_rate_claim():
    result = _run("rate_claim.py")
    assert result["rate"].passed, result["rate"].reason
    assert not result["sqrt_rate"].passed, result["sqrt_rate"].reason  # the check can reject a claim
    assert result["held"].passed, result["held"].reason


def test_recipe_new_loss():
    result = _run("new_loss.py")
    assert result["report"].passed, str(result["report"])
    assert not result["wrong"].passed, str(result["wrong"])  # a wrong stated minimizer is caught
    import synthalign as sa

    fitted, world = result["fitted"], result["world"]
    to_stated = sa.forward_kl(result["expected"], fitted.policy)
    to_wrong = sa.forward_kl(result["dpo_minimizer"](None, world, 0.0, {}), fitted.policy)
    assert bool((to_stated < to_wrong).all()), (to_stated, to_wrong)


def test_recipe_poor_coverage():
    rows = {
        (tilt, method): (coverage, mean, se) for tilt, coverage, method, mean, se in _run("poor_coverage.py")["rows"]
    }
    assert rows[(2.0, "pmle")][0] > rows[(0.0, "pmle")][0]  # the tilt worsens the coverage C_Pi
    pmle, rkl = rows[(2.0, "pmle")], rows[(2.0, "rkl")]
    assert pmle[1] - rkl[1] > 4 * (pmle[2] ** 2 + rkl[2] ** 2) ** 0.5  # what the page shows: RKL's error is lower


def test_recipe_transformer():
    pytest.importorskip("transformers")
    result = _run("transformer.py")
    assert result["after"] < result["before"] / 2, (result["before"], result["after"])
