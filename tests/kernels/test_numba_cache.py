"""Numba's disk cache: where the kernels are kept, and an install where they cannot be.

The read-only test builds the wheel, installs it into a folder made read-only, and runs
a child Python as an unprivileged user (uid 65534, nobody) with no ``HOME``, no
``NUMBA_CACHE_DIR`` and a read-only ``XDG_CACHE_HOME``: the package folder and the
user's cache folder are both unwritable, as for a service account or a container. Root
ignores file permissions, hence the other user; where no Python is runnable by that
user (the interpreter inside root's home, say), or off Linux (where the user's cache
folder is not ``XDG_CACHE_HOME``), the test is skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import pytest

from tinymbv2.kernels.numba import cache

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534

CHILD = r"""
import sys
import numpy as np
import tinymbv2
from tinymbv2 import functional as F, optim
from tinymbv2.kernels import kernels_for
from tinymbv2.models import mobilenet_v2

assert tinymbv2.__file__.startswith(sys.argv[1]), tinymbv2.__file__  # the installed wheel
# a training step on the default kernels (numba), fused as a run trains: the smallest
# model, 8 x 8 images, a batch of 3 (of 2, the blocks on 1 x 1 planes normalise two values
# to -1 and 1, and the biases of their last BatchNorms get no gradient), so that as little
# as possible compiles
model = mobilenet_v2(width_mult=0.35, num_classes=3, in_channels=1, small_input=True, seed=0)
net = tinymbv2.fuse(model)
before = [p.data.copy() for p in model.parameters()]
opt = optim.SGD(model.parameters(), lr=0.1)
x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
assert type(kernels_for(x)).__name__ == "NumbaKernels", kernels_for(x)
loss = F.cross_entropy(net(tinymbv2.Tensor(x)), np.array([0, 1, 2]))
opt.zero_grad()
loss.backward()
opt.step()
from tinymbv2.kernels.numba import cache, compiling

moved = sum(not np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
print(f"cache={cache.CACHE} compiled={len(compiling.compiled())} loss={float(loss.item()):.4f} "
      f"moved={moved}/{len(before)}")
"""


def run_as_nobody(cmd, **kwargs):
    ids = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if os.geteuid() == 0 else {}
    return subprocess.run(cmd, capture_output=True, text=True, **ids, **kwargs)


def python_for_nobody(env, cwd) -> str | None:
    """A Python the child's user can run, with this environment's packages: this one, or
    the system's of the same version (a venv's interpreter may live in root's home)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable), shutil.which(f"python{version}"),
                  f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    check = f"import sys, numba, numpy, scipy; assert sys.version.startswith('{version}')"
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            if run_as_nobody([python, "-c", check], env=env, cwd=cwd, timeout=120).returncode == 0:
                return python
        except OSError:  # not there, or not executable by that user
            continue
    return None


@pytest.fixture
def read_only_install():
    """(site folder holding the installed wheel, a read-only cache home, the root),
    all read-only, readable by the child's user."""
    root = Path(tempfile.mkdtemp(prefix="tinymbv2-ro-"))
    try:
        root.chmod(0o755)
        src = root / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        # a copy without caches, so the build neither ships nor writes into the checkout's
        shutil.copytree(REPO / "tinymbv2", src / "tinymbv2",
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"),
                              str(src)], check=True, capture_output=True, timeout=300)
        wheel = next((root / "wheel").glob("tinymbv2-*.whl"))
        subprocess.run(pip + ["install", "--no-deps", "--target", str(root / "site"), str(wheel)],
                       check=True, capture_output=True, timeout=300)
        (root / "cache-home").mkdir()
        for path in [root / "site", root / "cache-home", *(root / "site").rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        yield root / "site", root / "cache-home", root
    finally:
        for path in root.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is Linux's")
def test_a_read_only_install_without_a_home_trains_with_one_notice(read_only_install):
    """A numba training step compiles without a cache, with one line on stderr; and
    ``tinymbv2 warmup``, which has nothing to keep its work in, says so in one line and
    exits 2. Each run compiles cold (nothing can be kept): 17 kernels, 27-28 s of the test's
    29-30 s on 2 cores shared with another test run (measured 2026-12-05)."""
    site, cache_home, root = read_only_install
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOME", "NUMBA_CACHE_DIR", "PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), *deps]), XDG_CACHE_HOME=str(cache_home),
               PYTHONDONTWRITEBYTECODE="1")
    python = python_for_nobody(env, root)
    if python is None:
        pytest.skip("no Python that an unprivileged user can run with these packages")
    probe = run_as_nobody([python, "-c", f"open({str(site / 'x')!r}, 'w')"], env=env, cwd=root)
    assert probe.returncode != 0, "the install folder is writable: the test would prove nothing"

    child = run_as_nobody([python, "-c", CHILD, str(site)], env=env, cwd=root, timeout=600)

    assert child.returncode == 0, child.stderr[-3000:]
    assert "cache=False" in child.stdout and "moved=" in child.stdout
    assert int(child.stdout.split("compiled=")[1].split()[0]) > 0  # numba kernels compiled
    moved, total = child.stdout.split("moved=")[1].split()[0].split("/")
    assert int(moved) == int(total) > 0  # every parameter took the step
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr  # one notice, no traceback
    assert lines[0].startswith("tinymbv2: ") and "NUMBA_CACHE_DIR" in lines[0]

    warmup = run_as_nobody([python, "-m", "tinymbv2", "warmup"], env=env, cwd=root, timeout=600)

    assert warmup.returncode == 2 and warmup.stdout == "", warmup.stdout + warmup.stderr[-3000:]
    lines = warmup.stderr.strip().splitlines()
    assert len(lines) == 1, warmup.stderr  # its own error, not the kernels' notice as well
    assert lines[0].startswith("tinymbv2 warmup: error: no writable folder for Numba's cache")
    assert "NUMBA_CACHE_DIR" in lines[0]


def test_numba_cache_dir_is_where_the_kernels_are_kept(tmp_path, monkeypatch):
    """With NUMBA_CACHE_DIR set, Numba's locators (asked by find_cache) choose it."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    assert cache.find_cache() == (True, str(tmp_path))
    folder = cache.cache_folder(os.path.join(cache.PACKAGE_DIR, "tile.py"))
    assert Path(folder).parent == tmp_path


def test_the_kernel_folders_are_every_package_of_the_set():
    names = {Path(f).name for f in cache.kernel_folders()}
    assert names == {"numba", "batchnorm", "dense", "depthwise", "pointwise"}
