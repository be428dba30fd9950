r"""Build the course notebooks from their plain-Python sources.

Each chapter is written as ``notebooks/src/NN_name.py``: a valid Python file whose
cells are separated by ``# %%`` lines (the "percent" format most editors know):

    # %% [markdown]
    r'''
    # 1. A title
    Prose with $\LaTeX$.
    '''

    # %%
    x = 1 + 1

A markdown cell is one raw triple-quoted string (so LaTeX backslashes need no
escaping); a code cell is everything up to the next marker. This script turns
every source into ``notebooks/NN_name.ipynb`` with no outputs and fixed cell
ids, so building twice gives byte-identical files:

    python notebooks/_build.py            # (re)write every notebook
    python notebooks/_build.py --check    # exit 1 if a notebook is not its source's output
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?[ \t]*$")
QUOTES = ('r"""', '"""', "r'''", "'''")

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_cells(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """[(kind, source), ...] with kind "markdown" or "code", from a percent-format file."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            if "".join(lines).strip():
                raise ValueError(f"{name}: text before the first '# %%' marker")
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = body.strip()
            opener = next((q for q in QUOTES if body.startswith(q)), None)
            if opener is None or not body.endswith(opener[-3:]) or len(body) < 2 * len(opener):
                raise ValueError(f"{name}: a markdown cell must be one triple-quoted string:\n{body[:200]}")
            body = body[len(opener):-3].strip("\n")
        if body.strip():
            cells.append((kind, body.rstrip()))

    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if m.group("md") else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook for one source file: no outputs, deterministic ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python", "pygments_lexer": "ipython3"},
    }
    for i, (kind, body) in enumerate(parse_cells(source.read_text(encoding="utf-8"), source.name)):
        cell_id = f"{source.stem[:2]}-{i:03d}"
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(body, id=cell_id)
        else:
            cell = nbformat.v4.new_code_cell(body, id=cell_id)
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(source: Path) -> str:
    return nbformat.writes(build_notebook(source)) + "\n"


def sources() -> list[Path]:
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def target(source: Path) -> Path:
    return HERE / f"{source.stem}.ipynb"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that every notebook equals its source's build")
    args = parser.parse_args(argv)
    stale = []
    for src in sources():
        text, out = render(src), target(src)
        if args.check:
            if not out.exists() or out.read_text(encoding="utf-8") != text:
                stale.append(out.name)
        else:
            if not out.exists() or out.read_text(encoding="utf-8") != text:
                out.write_text(text, encoding="utf-8")
                print(f"wrote {out.relative_to(HERE.parent)}")
    orphans = {p.stem for p in HERE.glob("[0-9][0-9]_*.ipynb")} - {s.stem for s in sources()}
    if orphans:
        print(f"notebooks without a source in notebooks/src/: {sorted(orphans)}", file=sys.stderr)
        return 1
    if stale:
        print(f"out of date (run python notebooks/_build.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
