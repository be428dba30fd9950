"""The course: every notebook runs top to bottom, is stored clean, and the site builds.

* Each ``notebooks/NN_name.ipynb`` is executed in a fresh kernel with
  ``TINYMBV2_FAST=1`` (the CI-sized settings: a few hundred images, an epoch or
  two); any cell that raises fails the test. On an idle two-core machine a
  chapter takes seconds to about a minute (the training chapters the longest);
  on a busy one, several times that. Two chapters run side by side, one Numba
  thread each, except those that set or time their own threads (``RUN_ALONE``).
* Every notebook is stored without outputs or execution counts, and is exactly
  what ``notebooks/_build.py`` makes of its source in ``notebooks/src/``.
* Every chapter has a stored full-size run, ``notebooks/executed/NN_name.ipynb``, that
  ran its source as it is now (``notebooks/_execute.py``): the test of a chapter whose
  stored run is missing or stale fails, naming the command that stores a current one.
  The stored runs are clean (no errors, timings or widget state).
* ``mkdocs build --strict`` succeeds (skipped only when MkDocs is not installed), and the
  built site has no link to a missing page or anchor; its chapter pages link to their
  neighbours and their code, say when they do not show the stored full-size run, and
  are indexed for search by their prose, not their code.
"""
import asyncio
import functools
import hashlib
import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbclient  # noqa: F401  (the notebook tests need nbformat, nbclient and ipykernel:
import nbformat  # they are not optional, so a machine without them fails loudly)
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 900  # seconds per cell: a fast-mode cell takes seconds, but CI machines can be busy


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"notebooks{script}", NOTEBOOK_DIR / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_builder():
    return _load("_build")


EXECUTOR = _load("_execute")
SOURCES = EXECUTOR.chapters()
STORED_RUNS = sorted(EXECUTOR.STORED.glob("*.ipynb"))


def test_the_chapter_count_is_nineteen():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 20)]


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


# Chapters that time or set their own threads (inference races, the GPU, int8, MPI ranks)
# run alone with every core; the others run two at a time, one Numba thread each. A
# fast-mode chapter is mostly Python between small kernels (chapter 10: 41 s with one thread,
# 36 s with two, measured), so two kernels side by side use the two cores far better than
# one kernel with two threads does.
RUN_ALONE = {"14_inference", "15_gpu", "18_deployment", "19_data_parallel"}


def _run_fast(path, threads=None):
    """Execute one notebook in a fresh kernel with ``TINYMBV2_FAST=1``; the executed notebook.
    A cell that raises raises here (``CellExecutionError``, naming the cell)."""
    env = dict(os.environ, TINYMBV2_FAST="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    asyncio.run(client.async_execute(env=env))
    return nb


@pytest.fixture(scope="module")
def fast_runs(request):
    """{stem: Future of ``_run_fast``} for the chapters this session's tests ask for: the
    paired ones two at a time, then the ones that run alone, one by one, each test waiting
    for its own. Runs not yet started when the module ends (``-x``) are cancelled."""
    chosen = [item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_notebook_runs_in_fast_mode"]
    paired, alone = ThreadPoolExecutor(2), ThreadPoolExecutor(1)
    futures = {p.stem: paired.submit(_run_fast, p, 1) for p in chosen if p.stem not in RUN_ALONE}
    first = list(futures.values())

    def after_the_paired(path):
        wait(first)
        return _run_fast(path)

    futures.update({p.stem: alone.submit(after_the_paired, p) for p in chosen
                    if p.stem in RUN_ALONE})
    yield futures
    for pool in (paired, alone):
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, fast_runs):
    nb = fast_runs[path.stem].result()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    assert printed.strip(), f"{path.name} printed nothing"


# ---------------------------------------------------------------- stored full-size runs


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_stored_full_size_run_is_current(source):
    status = EXECUTOR.stored_status(source)
    stored = EXECUTOR.STORED.relative_to(ROOT) / f"{source.stem}.ipynb"
    assert status == "current", (
        f"chapter {source.stem}: its stored full-size run {stored} is {status}"
        + (" (its source changed since it ran)" if status == "stale" else "")
        + f"; run `{EXECUTOR.full_run_command(source)}` (or `make docs-full` for every chapter)"
    )


@pytest.mark.parametrize("stored", STORED_RUNS, ids=lambda p: p.stem)
def test_stored_run_is_a_clean_full_size_run(stored):
    assert (EXECUTOR.SRC / f"{stored.stem}.py").exists(), f"{stored.name} has no chapter source"
    nb = nbformat.read(stored, as_version=4)
    record = nb.metadata["tinymbv2"]
    assert record["fast"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", record["source_sha256"])
    assert record["source"] == f"notebooks/src/{stored.stem}.py"
    assert record["seconds"] > 0 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"])
    assert "widgets" not in nb.metadata
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    assert not [c.metadata for c in nb.cells if "execution" in c.metadata], "per-cell timings stored"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [k for o in outputs for k in o.get("data", {}) if "widget" in k]
    assert not [o for o in outputs if "\r" in o.get("text", "")], "progress-bar frames stored"


def test_stored_status_follows_the_whole_source(tmp_path):
    source = tmp_path / "99_chapter.py"
    source.write_text("# %% [markdown]\n'''\n# 99. A chapter\n'''\n\n# %%\nx = 1\n")
    stored_dir = tmp_path / "executed"
    assert EXECUTOR.stored_status(source, stored_dir) == "missing"
    nb = nbformat.v4.new_notebook()
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    nb.metadata["tinymbv2"] = {"fast": False, "source_sha256": sha}
    stored_dir.mkdir()
    nbformat.write(nb, stored_dir / "99_chapter.ipynb")
    assert EXECUTOR.stored_status(source, stored_dir) == "current"
    source.write_text(source.read_text().replace("99. A chapter", "99. A chapter, reworded"))
    assert EXECUTOR.stored_status(source, stored_dir) == "stale"  # prose counts too
    nb.metadata["tinymbv2"] = {"fast": True, "source_sha256": EXECUTOR.source_sha256(source)}
    nbformat.write(nb, stored_dir / "99_chapter.ipynb")
    assert EXECUTOR.stored_status(source, stored_dir) == "stale"  # a fast run is no full-size run
    assert EXECUTOR.full_run_command(source) == "python notebooks/_execute.py --full 99"


def test_strip_noise_keeps_what_the_reader_sees():
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("fit()", metadata={"execution": {"iopub.status.idle": "..."}})
    figure = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="  0%|   | 0/9\r 50%|#  | 4/9\r100%|##| 9/9\n"),
        nbformat.v4.new_output("stream", name="stderr", text="train 1/2\r" + " " * 20 + "\r"),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {}}),
        nbformat.v4.new_output("display_data", data=dict(figure)),
        nbformat.v4.new_output("stream", name="stdout", text="acc 0.98\n"),
    ]
    nb.cells = [cell]
    EXECUTOR.strip_noise(nb)
    assert "widgets" not in nb.metadata and "execution" not in cell.metadata
    assert [o.get("text") for o in cell.outputs] == ["100%|##| 9/9\n", None, "acc 0.98\n"]
    assert cell.outputs[1].data == figure


# ---------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install the docs extra to build the site)")
    out = tmp_path_factory.mktemp("site") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_mkdocs_build_strict(site):
    for page in ("index.html", "article-errors/index.html", "chapters/01_autograd/index.html",
                 "api/models/index.html", "assets/mathjax/tex-mml-chtml.js",
                 "search/search_index.json"):
        assert (site / page).exists(), page
    errors_page = (site / "article-errors" / "index.html").read_text(encoding="utf-8")
    assert "{{" not in errors_page and "3,504,872" in errors_page
    for page in site.rglob("*.html"):  # offline: nothing loaded from another host
        text = page.read_text(encoding="utf-8")
        for marker in ("fonts.googleapis", "cdnjs.cloudflare", "cdn.jsdelivr", "unpkg.com"):
            assert marker not in text, f"{page.relative_to(site)} references {marker}"


class _Links(HTMLParser):
    """The ids of a page and the places it links to (a/link href, img/script src)."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.targets = set(), []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(attrs[k] for k in ("id", "name") if attrs.get(k))
        key = {"a": "href", "link": "href", "img": "src", "script": "src"}.get(tag)
        if key and attrs.get(key):
            self.targets.append(attrs[key])


def test_site_has_no_dangling_link(site):
    pages: dict[Path, _Links] = {}

    def parsed(path: Path) -> _Links:
        if path not in pages:
            pages[path] = _Links(path.read_text(encoding="utf-8"))
        return pages[path]

    dangling = []
    for page in sorted(site.rglob("*.html")):
        for target in parsed(page).targets:
            url = urlsplit(target)
            if url.scheme or url.netloc:  # another host (none is loaded: see above), mailto:, data:
                continue
            path = unquote(url.path)
            if not path:
                dest = page
            elif path.startswith("/"):  # the 404 page links from the site's root
                dest = (site / path.lstrip("/")).resolve()
            else:
                dest = (page.parent / path).resolve()
            if dest.is_dir():
                dest = dest / "index.html"
            if not dest.is_file():
                dangling.append(f"{page.relative_to(site)}: {target} (no such page)")
            elif url.fragment and dest.suffix == ".html" and unquote(url.fragment) not in parsed(dest).ids:
                dangling.append(f"{page.relative_to(site)}: {target} (no such anchor)")
    assert not dangling, "links to nothing:\n" + "\n".join(dangling)


@functools.cache
def _load_hook():
    spec = importlib.util.spec_from_file_location("docs_course_hook", ROOT / "docs" / "_hooks" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_chapter_page_links_its_neighbours_and_code_and_says_what_ran(site, source):
    text = (site / "chapters" / source.stem / "index.html").read_text(encoding="utf-8")
    i = SOURCES.index(source)
    for neighbour in SOURCES[max(i - 1, 0):i] + SOURCES[i + 1:i + 2]:
        assert f'href="../{neighbour.stem}/"' in text, f"no link to the chapter {neighbour.stem}"
    for module in _load_hook().CHAPTER_CODE[source.stem[:2]]:  # the anchors exist: see the dangling-link test
        assert f'#{module}"><code>{module}</code></a>' in text, f"no link to {module}"
    fast_note = "This page shows a fast-mode run" in text
    no_outputs_note = "This page shows the chapter's code without its outputs" in text
    if EXECUTOR.stored_status(source) == "current":
        assert not fast_note and not no_outputs_note
    else:
        assert fast_note != no_outputs_note, "a page not on its stored run must say so, once"
        assert "make docs-full" in text


def _plain(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_search_indexes_a_chapter_by_its_prose(site, source):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    entries = [e for e in index["docs"] if e["location"].startswith(f"chapters/{source.stem}/")]
    nb = nbformat.read(NOTEBOOK_DIR / f"{source.stem}.ipynb", as_version=4)
    headings = [m.group(1).strip() for c in nb.cells if c.cell_type == "markdown"
                for m in re.finditer(r"^#{1,3}\s+(.+)$", c.source, re.M)]
    titles = [_plain(e["title"]) for e in entries]
    assert titles == [re.sub(r"`([^`]*)`", r"\1", h) for h in headings]
    text = " ".join(e["text"] for e in entries)
    assert "TINYMBV2_FAST = os.environ" not in text  # the first code cell of every chapter
    assert "Copied!" not in text and "In\xa0[" not in text
    prose = re.sub(r"\s+", " ", _plain(text))
    for cell in (c for c in nb.cells if c.cell_type == "markdown"):  # orphan cells too
        plain = [line for line in cell.source.splitlines()
                 if len(line) >= 30 and not re.search(r"[$*`\[\]|<>#_\\]", line)]
        if plain:
            line = re.sub(r"\s+", " ", max(plain, key=len)).strip()
            assert line in prose, f"not indexed: {line!r}"
