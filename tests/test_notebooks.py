"""The course: every notebook runs top to bottom, is stored clean, and the site builds.

* Each ``notebooks/NN_name.ipynb`` is executed in a fresh kernel with
  ``TINYMBV2_FAST=1`` (the CI-sized settings: a few hundred images, an epoch or
  two); any cell that raises fails the test. On an idle two-core machine a
  chapter takes seconds to about a minute (the training chapters the longest);
  on a busy one, several times that.
* Every notebook is stored without outputs or execution counts, and is exactly
  what ``notebooks/_build.py`` makes of its source in ``notebooks/src/``.
* ``mkdocs build --strict`` succeeds (skipped only when MkDocs is not installed).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbclient  # noqa: F401  (the notebook tests need nbformat, nbclient and ipykernel:
import nbformat  # they are not optional, so a machine without them fails loudly)
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900  # seconds per cell: a fast-mode cell takes seconds, but CI machines can be busy


def _load_builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_fifteen_chapters():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 16)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs (run python notebooks/_build.py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_the_output_of_its_source(path):
    build = _load_builder()
    source = NOTEBOOK_DIR / "src" / f"{path.stem}.py"
    assert source.exists(), f"{path.name} has no source {source.relative_to(ROOT)}"
    assert path.read_text(encoding="utf-8") == build.render(source), (
        f"{path.name} differs from its source; run python notebooks/_build.py"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_the_fast_switch(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert 'TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"' in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, monkeypatch):
    monkeypatch.setenv("TINYMBV2_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    assert printed.strip(), f"{path.name} printed nothing"


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install the docs extra to build the site)")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    site = tmp_path / "site"
    for page in ("index.html", "article-errors/index.html", "chapters/01_autograd/index.html",
                 "api/models/index.html", "assets/mathjax/tex-mml-chtml.js",
                 "search/search_index.json"):
        assert (site / page).exists(), page
    errors_page = (site / "article-errors" / "index.html").read_text(encoding="utf-8")
    assert "{{" not in errors_page and "3,504,872" in errors_page
    for html in site.rglob("*.html"):  # offline: nothing loaded from another host
        text = html.read_text(encoding="utf-8")
        for marker in ("fonts.googleapis", "cdnjs.cloudflare", "cdn.jsdelivr", "unpkg.com"):
            assert marker not in text, f"{html.relative_to(site)} references {marker}"
