"""MkDocs hooks of the synthalign documentation (named in mkdocs.yml under `hooks:`).

Four jobs, so that the site follows the repository instead of copying it:

* the notebooks in `notebooks/` (outside docs/) become pages under `notebooks/`, and the
  "Notebooks" section of the nav lists whichever exist, in name order (a new notebook
  appears without touching mkdocs.yml; mkdocs-jupyter renders them, never executing them);
* `<!-- include-section PATH#HEADING -->` in a page is replaced by that section of a
  Markdown file of the repository (README.md, experiments/README.md) as it stands at build
  time; an optional fallback up to `<!-- end-include-section -->` is used when the section
  does not exist (and only then); without a fallback a missing section is a warning, which
  fails `mkdocs build --strict`;
* `<!-- api-modules PACKAGE -->` becomes the package's docstring followed by every public
  module of its folder, so a new module is documented without touching a page;
* `<!-- if-exists PATH -->A<!-- else -->B<!-- end-if-exists -->` keeps A when PATH (relative
  to the repository root) exists and B otherwise, for pages about modules or pictures that
  are not there in every version.

`<!-- notebook-list -->` is replaced by a list of the notebooks with their titles.

And one Markdown rule, for the pages and the docstrings alike: the star of the paper's notation
(π*, pi*, R*, P*, θ*) is a literal star, not the start or end of emphasis, so that
"KL(π* ‖ π) ... π*" is not set in italics between the two stars.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path

from markdown import Extension, util
from markdown.inlinepatterns import InlineProcessor
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.synthalign_docs")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK_SECTION = "Notebooks"

_INCLUDE = re.compile(
    r"<!-- include-section (?P<path>[^#\s]+)#(?P<heading>.+?) -->"
    r"(?:(?P<fallback>.*?)<!-- end-include-section -->)?",
    re.DOTALL,
)
# An innermost block (no if-exists inside): blocks may nest, and are expanded from the inside out.
_NO_NESTED = r"(?:(?!<!-- if-exists ).)*?"
_IF_EXISTS = re.compile(
    rf"<!-- if-exists (?P<path>\S+) -->(?P<then>{_NO_NESTED})"
    rf"(?:<!-- else -->(?P<otherwise>{_NO_NESTED}))?<!-- end-if-exists -->",
    re.DOTALL,
)
_API_MODULES = re.compile(r"<!-- api-modules (?P<package>[\w.]+) -->")
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


# A star right after the symbols the paper stars; a lookbehind per symbol (each of fixed width).
_NOTATION_STAR = r"(?:(?<=π)|(?<=Π)|(?<=θ)|(?<=\bpi)|(?<=\bR)|(?<=\bP))\*(?!\*)"


class _LiteralStar(InlineProcessor):
    def handleMatch(self, match, data):
        # What a backslash escape becomes: Python-Markdown restores the character after inline parsing.
        return f"{util.STX}{ord('*')}{util.ETX}", match.start(0), match.end(0)


class NotationStars(Extension):
    """π*, pi*, R*, P*, θ*: the star is notation, never emphasis (runs before the emphasis patterns)."""

    def extendMarkdown(self, md):
        md.inlinePatterns.register(_LiteralStar(_NOTATION_STAR, md), "notation_star", 65)


def notebooks() -> list[Path]:
    """The notebooks of the repository, in name order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    """The first Markdown heading of a notebook, else its file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        for line in source if isinstance(source, list) else source.splitlines():
            match = _HEADING.match(line.strip())
            if match:
                return match.group(2).strip()
    return path.stem


def markdown_section(text: str, heading: str) -> str | None:
    """The body of the section titled `heading` (any level), up to the next heading of the same or a higher level.

    Fenced code blocks are skipped when looking for headings (a `# comment` in a bash block is not one).
    """
    lines = text.splitlines()
    start = level = None
    in_fence = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            continue
        if start is None:
            if match.group(2).strip() == heading.strip():
                start, level = index + 1, len(match.group(1))
        elif len(match.group(1)) <= level:
            return "\n".join(lines[start:index]).strip("\n")
    return None if start is None else "\n".join(lines[start:]).strip("\n")


def rebase_links(text: str, source: str, page: str) -> str:
    """Links of `text`, written relative to the repository file `source`, made right for the docs page `page`.

    A target inside docs/ becomes a path relative to the page; any other relative target (a file
    of the repository that the site does not hold) becomes its text and the path as code; an anchor
    of the source file (`#section`), which the page does not have, becomes its text.  Absolute URLs
    are kept.
    """

    def replace(match: re.Match) -> str:
        target = match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            return match.group(0)
        if target.startswith("#"):
            return match.group("text")
        path, _, anchor = target.partition("#")
        in_repo = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if in_repo.startswith("docs/"):
            relative = posixpath.relpath(in_repo[len("docs/") :], posixpath.dirname(page) or ".")
            new_target = relative + (f"#{anchor}" if anchor else "")
            return f"{match.group('bang')}[{match.group('text')}]({new_target}{match.group('title') or ''})"
        if match.group("bang"):
            return f"*{match.group('text')}* (`{in_repo}`)"
        return f"{match.group('text')} (`{in_repo}`)"

    return _LINK.sub(replace, text)


def package_modules(package: str) -> list[str]:
    """The public modules and subpackages of `package` (dotted), in name order, from its folder."""
    folder = ROOT.joinpath(*package.split("."))
    names = [path.stem for path in folder.glob("*.py") if not path.name.startswith("_")]
    names += [
        path.name for path in folder.iterdir() if (path / "__init__.py").exists() and not path.name.startswith("_")
    ]
    return [f"{package}.{name}" for name in sorted(names)]


def api_modules(package: str) -> str:
    """mkdocstrings blocks: the package's docstring, then each public module in full (each object once)."""
    blocks = [
        f"::: {package}\n    options:\n      members: false\n      heading_level: 1\n      show_root_heading: false"
    ]
    blocks += [f"::: {module}" for module in package_modules(package)]
    return "\n\n".join(blocks)


def expand(markdown: str, page: str) -> str:
    """The page's Markdown with its include-section, if-exists and notebook-list markers expanded."""

    def if_exists(match: re.Match) -> str:
        return match.group("then") if (ROOT / match.group("path")).exists() else (match.group("otherwise") or "")

    def include(match: re.Match) -> str:
        path, heading, fallback = match.group("path"), match.group("heading"), match.group("fallback")
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except OSError:
            text = ""
        body = markdown_section(text, heading)
        if body is None:
            if fallback is None:
                log.warning("%s: no section %r in %s", page, heading, path)
                return ""
            return fallback
        return rebase_links(body, path, page)

    expanded = None
    while expanded != markdown:
        expanded, markdown = markdown, _IF_EXISTS.sub(if_exists, markdown)
    markdown = _API_MODULES.sub(lambda match: api_modules(match.group("package")), markdown)
    markdown = _INCLUDE.sub(include, markdown)
    if "<!-- notebook-list -->" in markdown:
        listing = "\n".join(
            f"* [{notebook_title(nb)}]({posixpath.relpath('notebooks/' + nb.name, posixpath.dirname(page) or '.')})"
            f" — `notebooks/{nb.name}`"
            for nb in notebooks()
        )
        markdown = markdown.replace("<!-- notebook-list -->", listing or "*(no notebook in this version)*")
    return markdown


@event_priority(100)  # before mkdocstrings copies the Markdown extensions for the docstrings
def on_config(config):
    """Adds the notation-star rule; lists every existing notebook in the nav's Notebooks section."""
    config["markdown_extensions"].append(NotationStars())
    # The snippets' folder from the repository root whatever the working directory (`mkdocs build -f ...`).
    snippets = config["mdx_configs"].setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [str(ROOT / "docs" / "snippets")]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and NOTEBOOK_SECTION in entry:
            section = entry[NOTEBOOK_SECTION]
            section.extend(f"notebooks/{nb.name}" for nb in notebooks())
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    """Adds the repository's notebooks to the site's files as notebooks/NAME.ipynb."""
    for nb in notebooks():
        files.append(
            File(
                f"notebooks/{nb.name}",
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    return expand(markdown, page.file.src_uri)
