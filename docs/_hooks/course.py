"""MkDocs hooks for the tinymbv2 site (loaded by ``hooks:`` in mkdocs.yml).

* The course chapters: every ``notebooks/NN_name.ipynb`` becomes the page
  ``chapters/NN_name.ipynb`` (rendered by mkdocs-jupyter). When
  ``build/notebooks/NN_name.ipynb`` (written by ``python notebooks/_execute.py``)
  ran the same code cells, its outputs and figures are shown with the notebook's
  current prose; otherwise the page shows the code without outputs and the build
  log says so. (The page version is staged in ``build/docs_chapters/chapters/``.)
* MathJax, offline: the parts of MathJax 3 that the pages need are copied from
  the installed ``django-static-mathjax`` package (MathJax's own files, no Django
  needed) to ``assets/mathjax/``. No CDN, no network.
* Numbers computed by the library: ``{{ facts.NAME }}`` in a page is replaced by
  the value of ``facts.compute()[NAME]`` and ``{{ cli_help:COMMAND }}`` by the
  help text of that subcommand (``{{ cli_help }}`` for the top level). An
  unknown name stops the build.
* Notebook pages: the empty ``<script src="">`` and MathJax-2 configuration that
  mkdocs-jupyter's template emits when no MathJax URL is given, and nbconvert's
  Mermaid loader (which would import Mermaid from a CDN), are removed.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "notebooks"
STAGE = ROOT / "build" / "docs_chapters" / "chapters"
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml", "input/tex", "ui", "a11y")
PLACEHOLDER = re.compile(r"\{\{\s*(facts\.(?P<fact>\w+)|cli_help(?::(?P<cmd>[\w-]+))?)\s*\}\}")

log = logging.getLogger("mkdocs.hooks.course")
_facts: dict | None = None


def _stage_chapter(notebook: Path, dest: Path) -> None:
    """Write the page version of ``notebook`` to ``dest``: its own cells, with the outputs of
    its executed copy when that copy ran exactly the same code cells (so an edit of the prose
    does not need a re-run, and an edit of the code never shows stale outputs)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    executed = EXECUTED / notebook.name
    if executed.exists():
        ran = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
        if [c.source for c in ran] == [c.source for c in code]:
            for cell, done in zip(code, ran):
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
            nbformat.write(nb, dest)
            return
    log.info("chapter %s: no executed copy of its current code in build/notebooks/, rendering "
             "it without outputs (run: python notebooks/_execute.py --fast)", notebook.name)
    nbformat.write(nb, dest)


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("docs: MathJax is served from the 'django-static-mathjax' package; "
                           "pip install django-static-mathjax")
    return Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files
def on_files(files, config):
    # mkdocs-jupyter's NotebookFile needs a real src_dir (File.generated has none), so the
    # chosen version of every chapter is copied to build/docs_chapters/chapters/ first
    STAGE.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        _stage_chapter(notebook, STAGE / notebook.name)
        files.append(File(f"chapters/{notebook.name}", src_dir=str(STAGE.parent),
                          dest_dir=config["site_dir"], use_directory_urls=config["use_directory_urls"]))
    es5 = _mathjax_dir()
    for part in MATHJAX_PARTS:
        path = es5 / part
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file():
                rel = f.relative_to(es5).as_posix()
                files.append(File.generated(config, f"assets/mathjax/{rel}", abs_src_path=str(f)))
    return files


def _substitute(match) -> str:
    global _facts
    if match.group("fact"):
        if _facts is None:
            sys.path.insert(0, str(Path(__file__).parent))
            import facts  # docs/_hooks/facts.py

            _facts = facts.compute()
        name = match.group("fact")
        if name not in _facts:
            raise KeyError(f"docs: unknown fact {name!r} (known: {sorted(_facts)})")
        return str(_facts[name])
    from tinymbv2.cli import build_parser

    parser = build_parser()
    cmd = match.group("cmd")
    if cmd is None:
        return parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if cmd not in sub.choices:
        raise KeyError(f"docs: unknown CLI command {cmd!r} (known: {sorted(sub.choices)})")
    return sub.choices[cmd].format_help()


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        return markdown
    return PLACEHOLDER.sub(_substitute, markdown)


_EMPTY_SCRIPT = re.compile(r'<script src="">\s*</script>')
_MATHJAX2_CONFIG = re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S)
# nbconvert's loader for Mermaid diagrams imports mermaid from a CDN when a page has one;
# the course has none, and the site must not reference the network at all
_MERMAID_LOADER = re.compile(r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", '
                             r'async \(\) => \{\s*const diagrams = document\.querySelectorAll\("\.jp-Mermaid.*?</script>',
                             re.S)


def on_post_page(output, page, config):
    if page.file.src_uri.endswith(".ipynb"):
        for pattern in (_EMPTY_SCRIPT, _MATHJAX2_CONFIG, _MERMAID_LOADER):
            output = pattern.sub("", output)
    return output
