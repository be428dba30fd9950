#!/usr/bin/env bash
# The GPU checks of issue 7 in one command, on a machine with a CUDA GPU and CuPy:
#
#     bash benchmarks/gpu_check.sh
#
# Runs from the working tree (PYTHONPATH=.), installs nothing, takes under 5 minutes:
#   1. the versions found (Python, NumPy, CuPy, PyTorch, ...) and the GPU;
#   2. python -m pytest tests/kernels/test_gpu.py tests/test_gpu_model.py -q -x
#      (kernels against the reference set, ops/network/optimizers against the CPU and
#      PyTorch, device plumbing);
#   3. python -m benchmarks.gpu_step: a MobileNetV2-1.0 training step at 224 px, batch 64,
#      tinymbv2-cupy vs PyTorch eager; its table is the last thing printed.
# pytest/hypothesis missing on the GPU machine: run `bash benchmarks/vendor_test_deps.sh`
# on a machine that has them and carry build/gpu_vendor along; without hypothesis the
# seeded kernel cases still run. The exit status is non-zero if a test or the loss check fails.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
if [ -d build/gpu_vendor ] && ! $PY -c "import pytest, hypothesis" 2>/dev/null; then
    export PYTHONPATH="$PYTHONPATH:$PWD/build/gpu_vendor"   # after the image's own packages
fi

$PY - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "cupy", "numba", "torch", "torchvision", "pytest", "hypothesis"):
    try:
        print(f"  {name:<12}{importlib.import_module(name).__version__}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:<12}MISSING ({type(exc).__name__})")
try:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"  GPU         {props['name'].decode()}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
          f"driver {cupy.cuda.runtime.driverGetVersion()}")
except Exception as exc:  # noqa: BLE001
    print(f"  GPU         not usable: {type(exc).__name__}: {exc}")
PYEOF

status=0
if $PY -c "import pytest" 2>/dev/null; then
    timeout 190 $PY -m pytest tests/kernels/test_gpu.py tests/test_gpu_model.py -q -x -rs \
        -p no:cacheprovider --durations=5 || status=$?
else
    echo "pytest is missing here: tests NOT run (see the header of this script)"
    status=1
fi
echo
timeout 90 $PY -m benchmarks.gpu_step || status=$?
exit $status
