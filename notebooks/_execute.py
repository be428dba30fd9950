"""Execute the course chapters: full-size runs stored with the course, fast runs for the site.

    python notebooks/_execute.py --full              # chapters whose stored run is stale/missing
    python notebooks/_execute.py --full 10 12        # these chapters (name prefixes), always
    python notebooks/_execute.py --full --force      # every chapter (what `make docs-full` runs)
    python notebooks/_execute.py --fast              # fast runs of the chapters without a
                                                     # current stored run (what `make docs` runs)

Each chapter is built from its source ``notebooks/src/NN_name.py`` (as
``notebooks/_build.py`` builds it) and run top to bottom in a fresh kernel, with
``notebooks/`` as its working folder.

**Full size** (``--full``: ``TINYMBV2_FAST=0``, the settings the prose describes; the
training chapters take the longest). The executed notebook is stored in the repository as
``notebooks/executed/NN_name.ipynb``, and the site shows it: these are the results the
chapters' prose talks about. Its metadata (``metadata["tinymbv2"]``) records the sha256
of the whole source file it ran, the seconds the run took and its date. A stored run
whose hash is not its source's is *stale*: any edit of the source, prose included, makes
it so, and ``tests/test_notebooks.py`` then fails naming the chapter and this command.
(A change in the library is not detected; ``make docs-full`` re-runs every chapter.)
Execution noise is not stored: no per-cell timings, no widget state, progress bars
reduced to the text they left on screen. Figures are kept.

**Fast** (``--fast``: ``TINYMBV2_FAST=1``, a few hundred images, an epoch or two). The
executed copy goes to ``build/notebooks/`` (git-ignored). The site uses it only for a
chapter without a current stored run, and says so at the top of that page. A chapter
whose fast copy ran the same code cells is not run again (a prose edit needs no re-run).

A chapter named on the command line always runs; ``--force`` runs every chapter. A
failing cell stops that chapter (nothing is written for it), the next one goes on, and
the script exits 1.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = HERE / "src"
STORED = HERE / "executed"             # full-size runs, committed
FAST = ROOT / "build" / "notebooks"     # fast runs, git-ignored
CELL_TIMEOUT = {True: 900, False: 3600}  # seconds per cell, fast and full


@functools.cache
def _load_builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", HERE / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chapters() -> list[Path]:
    """The chapter sources, ``notebooks/src/NN_name.py``, in order."""
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def source_sha256(source: Path) -> str:
    """The sha256 of the whole source file, as hex: what a stored run records."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def stored_status(source: Path, stored_dir: Path = STORED) -> str:
    """``"current"``, ``"stale"`` or ``"missing"``: the stored full-size run of ``source``.

    Current means ``stored_dir/NN_name.ipynb`` exists, is a full-size run and records the
    sha256 of the source as it is now.
    """
    stored = stored_dir / f"{source.stem}.ipynb"
    if not stored.exists():
        return "missing"
    meta = nbformat.read(stored, as_version=4).metadata.get("tinymbv2", {})
    if meta.get("fast", True) or meta.get("source_sha256") != source_sha256(source):
        return "stale"
    return "current"


def full_run_command(source: Path) -> str:
    """The command that stores a current full-size run of one chapter."""
    return f"python notebooks/_execute.py --full {source.stem[:2]}"


def code_sources(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def same_code(nb, executed: Path) -> bool:
    """True when ``executed`` exists and ran exactly the code cells of ``nb``."""
    return executed.exists() and code_sources(nb) == code_sources(nbformat.read(executed, as_version=4))


def execute(nb, fast: bool, timeout: int) -> float:
    """Run ``nb`` in place, top to bottom, in a fresh kernel (cwd: notebooks/); the seconds it took.

    Raises nbclient's CellExecutionError on the first failing cell.
    """
    from nbclient import NotebookClient

    previous = os.environ.get("TINYMBV2_FAST")
    os.environ["TINYMBV2_FAST"] = "1" if fast else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                       record_timing=False, resources={"metadata": {"path": str(HERE)}}).execute()
        return time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop("TINYMBV2_FAST", None)
        else:
            os.environ["TINYMBV2_FAST"] = previous


_WIDGET = "application/vnd.jupyter.widget"


def settle_carriage_returns(text: str) -> str:
    r"""What a terminal shows of ``text``: each line keeps what follows its last ``\r``
    (a progress bar redrawn in place leaves its final state, not every frame)."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def strip_noise(nb):
    """Remove from an executed ``nb``, in place, what changes from run to run without
    saying anything: per-cell timings, widget state and views, and progress-bar frames
    (a stream left empty by that goes). Returns ``nb``."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = settle_carriage_returns(out.text)
                if not out.text.strip():
                    continue
            elif "data" in out:
                for key in [k for k in out.data if k.startswith(_WIDGET)]:
                    del out.data[key]
                if not out.data:
                    continue
            kept.append(out)
        cell.outputs = kept
    return nb


def _write(nb, dest: Path) -> None:
    """Write ``nb`` to ``dest`` through a temporary file: a stopped run leaves the old copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(dest)


def run_chapter(source: Path, fast: bool, timeout: int | None = None):
    """Build ``source``'s notebook, run it and return it with its outputs and its record
    (``metadata["tinymbv2"]``: fast, seconds, date, the source and its sha256)."""
    sha = source_sha256(source)  # before the run: an edit during it makes the copy stale
    nb = _load_builder().build_notebook(source)
    seconds = execute(nb, fast=fast, timeout=timeout or CELL_TIMEOUT[fast])
    strip_noise(nb)
    nb.metadata["tinymbv2"] = {
        "fast": fast,
        "source": source.relative_to(ROOT).as_posix(),
        "source_sha256": sha,
        "seconds": round(seconds, 1),
        "date": datetime.date.today().isoformat(),
    }
    return nb


def _selected(args) -> list[Path]:
    sources = chapters()
    unknown = [c for c in args.chapters if not any(s.name.startswith(c) for s in sources)]
    if unknown:
        raise SystemExit(f"no chapter in {SRC.relative_to(ROOT)} starts with {unknown}")
    if args.chapters:
        return [s for s in sources if any(s.name.startswith(c) for c in args.chapters)]
    return sources


def _skip_reason(source: Path, args) -> str | None:
    """Why ``source`` is skipped (None: run it)."""
    if args.force or args.chapters:
        return None
    if args.full:
        status = stored_status(source)
        return "its stored full-size run is current" if status == "current" else None
    if stored_status(source) == "current":
        return "the site shows its stored full-size run"
    if same_code(_load_builder().build_notebook(source), args.out / f"{source.stem}.ipynb"):
        return f"its fast run in {args.out.relative_to(ROOT)}/ ran the same code"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("chapters", nargs="*", help="name prefixes, e.g. 01 05 (default: all)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true",
                      help=f"TINYMBV2_FAST=0; store in {STORED.relative_to(ROOT)}/")
    mode.add_argument("--fast", action="store_true",
                      help=f"TINYMBV2_FAST=1; write to {FAST.relative_to(ROOT)}/")
    parser.add_argument("--force", action="store_true", help="run every selected chapter")
    parser.add_argument("--timeout", type=int, default=None,
                        help=f"seconds per cell (default {CELL_TIMEOUT[True]} fast, "
                             f"{CELL_TIMEOUT[False]} full)")
    args = parser.parse_args(argv)
    args.out = STORED if args.full else FAST
    failed = []
    for source in _selected(args):
        name = f"{source.stem}.ipynb"
        skip = _skip_reason(source, args)
        if skip:
            print(f"{name}: skipped ({skip})")
            continue
        print(f"{name}: running ({'full size' if args.full else 'fast'}) ...", flush=True)
        try:
            nb = run_chapter(source, fast=args.fast, timeout=args.timeout)
        except Exception as exc:  # report and go on with the next chapter
            print(f"{name}: FAILED\n{exc}", file=sys.stderr)
            failed.append(name)
            continue
        _write(nb, args.out / name)
        print(f"{name}: {nb.metadata['tinymbv2']['seconds']:.1f} s, "
              f"wrote {(args.out / name).relative_to(ROOT)}", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
