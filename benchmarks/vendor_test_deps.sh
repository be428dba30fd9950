#!/usr/bin/env bash
# Copy the pure-Python test tools (pytest, hypothesis and what they import) from this
# machine's environment into build/gpu_vendor (git-ignored), for a GPU machine whose
# image lacks them and cannot install anything:
#
#     bash benchmarks/vendor_test_deps.sh      # then carry build/gpu_vendor to the GPU machine
#
# benchmarks/gpu_check.sh puts build/gpu_vendor on PYTHONPATH when pytest or hypothesis is missing.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
dest=build/gpu_vendor
rm -rf "$dest"
mkdir -p "$dest"
$PY - "$dest" <<'PYEOF'
import importlib.metadata as md, os, shutil, sys
dest = sys.argv[1]
for dist_name in ("pytest", "pluggy", "iniconfig", "packaging", "pygments",
                  "hypothesis", "sortedcontainers", "attrs"):
    dist = md.distribution(dist_name)
    tops = {f.parts[0] for f in dist.files if f.parts[0] != ".." and "__pycache__" not in f.parts}
    for top in tops:  # packages, single modules (py.py, _hypothesis_globals.py) and the
        src = dist.locate_file(top)  # dist-info (entry points: hypothesis' pytest plugin)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, top), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.isfile(src):
            shutil.copy(src, dest)
PYEOF
du -sh "$dest"
