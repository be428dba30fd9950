"""MkDocs hooks for the tinymbv2 site (loaded by ``hooks:`` in mkdocs.yml).

* The course chapters: every ``notebooks/NN_name.ipynb`` becomes the page
  ``chapters/NN_name.ipynb`` (rendered by mkdocs-jupyter), with the outputs of one run
  of its code, the first of:

  1. its stored full-size run, ``notebooks/executed/NN_name.ipynb``, when that is
     current: it recorded the sha256 of the chapter's source as it is now (``python
     notebooks/_execute.py --full NN`` or ``make docs-full`` store them);
  2. its fast-mode run in ``build/notebooks/`` when that ran the same code cells
     (``python notebooks/_execute.py --fast``, which ``make docs`` runs); the page then
     opens with a note saying that its numbers are not the course's full-size results;
  3. none: the page shows the code without outputs, and opens with a note saying so.

  The build log names each chapter that is not on its stored run. (The page versions are
  staged in ``build/docs_chapters/chapters/``.)
* Around each chapter: links to the previous and the next chapter (by their titles)
  and to the code it teaches, the API reference of the modules in
  ``CHAPTER_CODE`` (whose entries show each function's source), at the top and the bottom
  of the page. A module that no page of ``docs/api/`` documents stops the build.
* Search indexes the chapters' prose: their headings and markdown cells, not the code
  cells and their outputs (which would otherwise fill the chapter's first entry). The
  chapters' tables of contents point at the ids their headings have (mkdocs-jupyter's
  differ where a heading holds inline code).
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

import copy
import html
import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
FAST_RUNS = ROOT / "build" / "notebooks"
STAGE = ROOT / "build" / "docs_chapters" / "chapters"
API_PAGES = ROOT / "docs" / "api"
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml", "input/tex", "ui", "a11y")
PLACEHOLDER = re.compile(r"\{\{\s*(facts\.(?P<fact>\w+)|cli_help(?::(?P<cmd>[\w-]+))?)\s*\}\}")

# The code each chapter teaches: modules documented in docs/api/ (by their ``::: module``).
CHAPTER_CODE = {
    "01": ["tinymbv2.autograd", "tinymbv2.gradcheck"],
    "02": ["tinymbv2.functional.conv", "tinymbv2.kernels.reference", "tinymbv2.kernels.numba"],
    "03": ["tinymbv2.functional.batchnorm", "tinymbv2.nn.layers"],
    "04": ["tinymbv2.functional.layers", "tinymbv2.functional.batchnorm", "tinymbv2.models.mobilenetv2"],
    "05": ["tinymbv2.models.mobilenetv2", "tinymbv2.models.summary", "tinymbv2.models.interop",
           "tinymbv2.fusion"],
    "06": ["tinymbv2.nn.init"],
    "07": ["tinymbv2.functional.losses"],
    "08": ["tinymbv2.optim.sgd", "tinymbv2.optim.rmsprop", "tinymbv2.optim.adam",
           "tinymbv2.optim.lr_scheduler"],
    "09": ["tinymbv2.data.datasets", "tinymbv2.data.splits", "tinymbv2.data.transforms",
           "tinymbv2.data.loader"],
    "10": ["tinymbv2.train.trainer", "tinymbv2.train.run", "tinymbv2.evaluation.loop",
           "tinymbv2.evaluation.metrics"],
    "11": ["tinymbv2.train.finetune", "tinymbv2.train.checkpoint", "tinymbv2.models.interop"],
    "12": ["tinymbv2.train.search"],
    "13": ["tinymbv2.models.mobilenetv2", "tinymbv2.models.summary"],
    "14": ["tinymbv2.fusion", "tinymbv2.functional.fused", "tinymbv2.models.memory"],
    "15": ["tinymbv2.kernels.cupy", "tinymbv2.backend"],
    "16": ["tinymbv2.data.scenes", "tinymbv2.detection.default_boxes", "tinymbv2.detection.matching",
           "tinymbv2.detection.box_coder", "tinymbv2.detection.ssd_loss", "tinymbv2.detection.postprocess",
           "tinymbv2.models.ssdlite", "tinymbv2.train.tasks", "tinymbv2.evaluation.detection_metrics"],
    "17": ["tinymbv2.models.deeplabv3", "tinymbv2.functional.resizing", "tinymbv2.functional.losses",
           "tinymbv2.evaluation.segmentation_metrics", "tinymbv2.evaluation.segmentation_loop",
           "tinymbv2.evaluation.segmentation_drawing"],
    "18": ["tinymbv2.export.folding", "tinymbv2.export.onnx_graph", "tinymbv2.quant.qparams",
           "tinymbv2.quant.fake_quant", "tinymbv2.quant.observers", "tinymbv2.quant.ptq",
           "tinymbv2.quant.onnx_qdq", "tinymbv2.quant.int8_net"],
    "19": ["tinymbv2.distributed.ddp", "tinymbv2.distributed.buckets",
           "tinymbv2.distributed.sync_batchnorm", "tinymbv2.distributed.launch",
           "tinymbv2.distributed.cost_model", "tinymbv2.distributed.training"],
}

NOTES = {
    "fast": ("Fast-mode outputs",
             "This page shows a fast-mode run: small data, few epochs; its numbers are not the "
             "course's full-size results. Run <code>make docs-full</code> (or <code>python "
             "notebooks/_execute.py --full {nn}</code> for this chapter) to store the full-size run."),
    "none": ("No outputs",
             "This page shows the chapter's code without its outputs: no run of its current code "
             "was found. Run <code>make docs</code> for a fast-mode run, or <code>make "
             "docs-full</code> for the course's full-size results."),
}

log = logging.getLogger("mkdocs.hooks.course")
_facts: dict | None = None
_runs: dict[str, str] = {}  # chapter file name -> "full", "fast" or "none"
_titles: dict[str, str] = {}  # chapter file name -> its title (the notebook's first heading)


def _load_executor():
    """notebooks/_execute.py, which stores the runs and knows whether one is current."""
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "_execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _take_outputs(nb, executed) -> bool:
    """Give ``nb``'s code cells the outputs of ``executed`` if it ran exactly the same code."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    ran = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in ran] != [c.source for c in code]:
        return False
    for cell, done in zip(code, ran):
        cell.outputs, cell.execution_count = _joined_streams(done.outputs), done.execution_count
    return True


def _joined_streams(outputs: list) -> list:
    """One output per run of consecutive prints to the same stream (a training log printed
    line by line is one block on the page, not one scrolling box per line)."""
    joined = []
    for out in outputs:
        if (out.get("output_type") == "stream" and joined
                and joined[-1].get("output_type") == "stream" and joined[-1]["name"] == out["name"]):
            joined[-1]["text"] += out["text"]
        else:
            joined.append(copy.deepcopy(out))
    return joined


def _title(nb, fallback: str) -> str:
    """The notebook's first heading (what the page and the site's nav show), else ``fallback``."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    match = re.match(r"#\s+(.+)", first)
    return match.group(1).strip() if match else fallback


def _stage_chapter(notebook: Path, dest: Path, executor) -> str:
    """Write the page version of ``notebook`` to ``dest``: its own cells with the outputs of
    its current stored run ("full"), else of a fast run of the same code ("fast"), else
    none ("none"); return which."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    _titles[notebook.name] = _title(nb, notebook.stem)
    source = executor.SRC / f"{notebook.stem}.py"
    status = executor.stored_status(source) if source.exists() else "missing"
    kind = "none"
    if status == "current":
        if _take_outputs(nb, nbformat.read(executor.STORED / notebook.name, as_version=4)):
            kind = "full"
        else:  # the source was edited and the notebook not rebuilt
            status = (f"current, but {notebook.name} is not its source's build "
                      "(run: python notebooks/_build.py)")
    fast = FAST_RUNS / notebook.name
    if kind == "none" and fast.exists() and _take_outputs(nb, nbformat.read(fast, as_version=4)):
        kind = "fast"
    if kind != "full":
        log.info("chapter %s: stored full-size run %s; the page shows %s (run: %s)", notebook.name,
                 status, "its fast-mode run" if kind == "fast" else "no outputs",
                 executor.full_run_command(source))
    nbformat.write(nb, dest)
    return kind


def _api_pages() -> dict[str, str]:
    """{module: its page in docs/api/}, from the pages' ``::: module`` lines."""
    pages = {}
    for page in sorted(API_PAGES.glob("*.md")):
        for module in re.findall(r"^:::\s*(\S+)", page.read_text(encoding="utf-8"), re.M):
            pages.setdefault(module, f"api/{page.name}")
    return pages


def _link(files, page, target: str, anchor: str = "") -> str:
    return files.get_file_from_path(target).url_relative_to(page.file) + (f"#{anchor}" if anchor else "")


def _chapter_nav(name: str, page, files) -> str:
    """Links to the previous and the next chapter, by their titles."""
    order = sorted(_runs)
    i = order.index(name)
    cells = []
    for j, side in ((i - 1, "prev"), (i + 1, "next")):
        if not 0 <= j < len(order):
            cells.append(f'<span class="tinymbv2-{side}"></span>')
            continue
        title = html.escape(_titles[order[j]])
        label = f"&larr; {title}" if side == "prev" else f"{title} &rarr;"
        href = _link(files, page, f"chapters/{order[j]}")
        cells.append(f'<a class="tinymbv2-{side}" href="{href}">{label}</a>')
    return f'<nav class="tinymbv2-chapter-nav" aria-label="Chapters">{"".join(cells)}</nav>'


def _chapter_code(name: str, page, files) -> str:
    """The modules the chapter teaches, linked to their API reference (and so their source)."""
    api = _api_pages()
    links = [f'<a href="{_link(files, page, api[m], m)}"><code>{m}</code></a>'
             for m in CHAPTER_CODE.get(name[:2], [])]
    if not links:
        return ""
    return ('<p class="tinymbv2-chapter-code">The code this chapter teaches: ' + ", ".join(links)
            + " (the API reference, where each function and class shows its source).</p>")


def _run_note(name: str) -> str:
    kind = _runs[name]
    if kind == "full":
        return ""
    title, text = NOTES[kind]
    return (f'<div class="admonition warning tinymbv2-run-note"><p class="admonition-title">{title}</p>'
            f"<p>{text.format(nn=name[:2])}</p></div>")


_HEADING_ID = re.compile(r'<h[1-6]\b[^>]*\bid="([^"]+)"')


def _toc_items(toc):
    for item in toc:
        yield item
        yield from _toc_items(item.children)


def _point_toc_at_headings(content: str, toc) -> None:
    """Give the table of contents the ids the page's headings have.

    mkdocs-jupyter takes the table of contents from the markdown (Python-Markdown's ids) and
    nbconvert writes the headings with its own ids; they differ where a heading holds inline
    code: "5.4 Reading `model(x)`" is ``54-reading`` in the one and ``54-reading-modelx`` in
    the other, and the link in the table of contents led nowhere.
    """
    ids = _HEADING_ID.findall(content)
    for item in _toc_items(toc):
        if item.id not in ids:
            matches = [i for i in ids if i.startswith(item.id)]
            if len(matches) == 1:
                item.id = matches[0]


def _index_prose(content: str, page, config) -> None:
    """Index the chapter's headings and markdown cells in place of the whole page.

    Material's search splits a page at its headings; in a notebook each heading sits in a
    cell of its own, so everything after the first cell (code, outputs, the prose of later
    cells) went to the page's first entry. The markdown cells, laid side by side, split
    into one entry per heading, with the prose under it.
    """
    search = next((p for p in config.plugins.values() if hasattr(p, "search_index")), None)
    if search is None:  # search is off
        return
    from bs4 import BeautifulSoup  # a dependency of nbconvert, which mkdocs-jupyter needs

    soup = BeautifulSoup(content, "html.parser")
    for permalink in soup.select("a.anchor-link"):
        permalink.decompose()
    prose = "\n".join(cell.decode_contents().strip()
                      for cell in soup.select(".jp-MarkdownCell .jp-RenderedMarkdown"))
    search.search_index.add_entry_from_context(
        SimpleNamespace(content=prose, toc=page.toc, url=page.url, meta={}, title=page.title))
    page.meta["search"] = {"exclude": True}  # the page's own entries would hold the code


def on_page_content(content, page, config, files):
    name = Path(page.file.src_uri).name
    if not page.file.src_uri.startswith("chapters/") or name not in _runs:
        return content
    _point_toc_at_headings(content, page.toc)
    _index_prose(content, page, config)
    nav = _chapter_nav(name, page, files)
    return (_run_note(name) + nav + _chapter_code(name, page, files) + content
            + nav.replace('class="tinymbv2-chapter-nav"', 'class="tinymbv2-chapter-nav tinymbv2-bottom"'))


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
    api = _api_pages()
    unknown = {nn: [m for m in modules if m not in api] for nn, modules in CHAPTER_CODE.items()}
    unknown = {nn: modules for nn, modules in unknown.items() if modules}
    if unknown:
        raise PluginError(f"docs/_hooks/course.py: CHAPTER_CODE names modules that no page of "
                          f"docs/api/ documents: {unknown}")
    STAGE.mkdir(parents=True, exist_ok=True)
    executor = _load_executor()
    _runs.clear()
    _titles.clear()
    for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        _runs[notebook.name] = _stage_chapter(notebook, STAGE / notebook.name, executor)
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
