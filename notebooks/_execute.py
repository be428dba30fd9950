"""Execute the course notebooks, one at a time, and keep executed copies for the site.

    python notebooks/_execute.py --fast              # TINYMBV2_FAST=1: seconds per chapter
    python notebooks/_execute.py                     # the full settings (minutes per chapter)
    python notebooks/_execute.py 01 04 --fast        # only the chapters whose name starts so

The executed copies go to ``build/notebooks/`` (git-ignored); the docs build
(``mkdocs build``) shows their outputs with the notebook's current prose as long
as the code cells are unchanged, and the notebook without outputs otherwise. A
chapter whose copy ran the same code is skipped unless ``--force`` (so a prose
edit needs no re-run). A failing cell stops that chapter and makes the script
exit 1 (the copy is not written).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "build" / "notebooks"


def notebooks() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def same_code(notebook: Path, executed: Path) -> bool:
    """True when ``executed`` exists and ran exactly the code cells of ``notebook``."""
    if not executed.exists():
        return False
    code = lambda p: [c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]
    return code(notebook) == code(executed)


def execute(path: Path, fast: bool = True, timeout: int = 900) -> tuple[nbformat.NotebookNode, float]:
    """Run ``path`` top to bottom in a fresh kernel (cwd: notebooks/); (executed nb, seconds).

    Raises nbclient's CellExecutionError on the first failing cell.
    """
    nb = nbformat.read(path, as_version=4)
    previous = os.environ.get("TINYMBV2_FAST")
    os.environ["TINYMBV2_FAST"] = "1" if fast else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                       resources={"metadata": {"path": str(HERE)}}).execute()
        return nb, time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop("TINYMBV2_FAST", None)
        else:
            os.environ["TINYMBV2_FAST"] = previous


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="name prefixes, e.g. 01 05 (default: all)")
    parser.add_argument("--fast", action="store_true", help="TINYMBV2_FAST=1 (CI-sized runs)")
    parser.add_argument("--force", action="store_true", help="re-run up-to-date chapters too")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in notebooks():
        if args.chapters and not any(path.name.startswith(c) for c in args.chapters):
            continue
        dest = args.out / path.name
        if not args.force and same_code(path, dest):
            print(f"{path.name}: up to date (its executed copy ran the same code)")
            continue
        try:
            nb, seconds = execute(path, fast=args.fast)
        except Exception as exc:  # report and go on with the next chapter
            print(f"{path.name}: FAILED\n{exc}", file=sys.stderr)
            failed.append(path.name)
            continue
        nb.metadata["tinymbv2"] = {"fast": args.fast, "seconds": round(seconds, 1)}
        nbformat.write(nb, dest)
        print(f"{path.name}: {seconds:.1f} s ({'fast' if args.fast else 'full'})", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
