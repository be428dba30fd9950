"""``tinymbv2 warmup``: what it prints, its one error, and that it compiles what a run needs."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tinymbv2.cli.warmup import add_warmup, run_warmup
from tinymbv2.kernels.numba import cache, compiling
from tinymbv2.train import warmup as warmup_module
from tinymbv2.train.warmup import CASES, Warmed

REPO = Path(__file__).resolve().parents[2]


def parse(argv):
    parser = argparse.ArgumentParser()
    add_warmup(parser)
    return parser.parse_args(argv)


def test_warmup_prints_each_case_and_what_it_compiled(monkeypatch, capsys):
    asked = []

    def fake_warmup(dtypes):
        asked.append(dtypes)
        kernel = compiling.Compiled("pointwise._matmul_images", ("float32",), 1.5)
        yield Warmed(CASES[0], "float32", (kernel, kernel), 3.0)
        yield Warmed(CASES[1], "float32", (), 0.25)

    monkeypatch.setattr(warmup_module, "warmup", fake_warmup)
    assert run_warmup(parse(["--float64"])) == 0
    assert asked == [("float32", "float64")]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("warming up the numba kernels: the training and inference steps")
    assert "float32 and float64" in lines[0] and cache.WHERE in lines[0]
    assert "digits (1x8x8)" in lines[1] and "2 kernels compiled" in lines[1] and "3.0 s" in lines[1]
    assert "(1x28x28)" in lines[2] and "all cached" in lines[2]
    assert lines[3].startswith("compiled 2 kernels in ")


def test_warmup_with_a_warm_cache_says_there_was_nothing_to_do(monkeypatch, capsys):
    monkeypatch.setattr(warmup_module, "warmup",
                        lambda dtypes: iter([Warmed(CASES[0], "float32", (), 0.1)]))
    assert run_warmup(parse([])) == 0
    assert "nothing to compile: the cache had every kernel" in capsys.readouterr().out


def test_warmup_without_a_cache_folder_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setattr(cache, "CACHE", False)
    monkeypatch.setattr(cache, "WHERE", "cannot cache function 'x': no locator available")
    assert run_warmup(parse([])) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1
    assert out.err.startswith("tinymbv2 warmup: error:") and "NUMBA_CACHE_DIR" in out.err


RUNS_AFTER_WARMUP = r"""
import json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
from tinymbv2.train import warmup as warmup_module
from tinymbv2.train.config import TrainConfig
from tinymbv2.train.warmup import CASES, one_run_step, warmup

asked = json.loads(sys.argv[1])
if asked["steps"] is not None:  # other steps than the warmup's own, to show what they miss
    warmup_module.STEPS = tuple(asked["steps"])


def signatures():
    # every kernel of the numba set, with the argument types it holds machine code for:
    # compiled in this process or loaded from the disk cache (which a cold process compiles)
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("tinymbv2.kernels.numba"):
            for value in vars(module).values():
                if isinstance(value, Dispatcher):
                    found[value.py_func.__module__ + "." + value.py_func.__qualname__] = {
                        str(sig) for sig in value.signatures}
    return found


warmed = list(warmup())  # as `tinymbv2 warmup` does: every shape, float32, batches of 8
assert [w.case for w in warmed] == list(CASES) and all(w.dtype == "float32" for w in warmed)
before = signatures()
for size, batch, width, changes in asked["runs"]:
    case = next(c for c in CASES if c.size == size)
    config = TrainConfig(small_input=case.small_input, width=width, **changes)
    one_run_step(config, case, np.dtype(np.float32), batch_size=batch, num_classes=7)
after = signatures()
print(json.dumps({k: sorted(after[k] - before.get(k, set())) for k in after
                  if after[k] - before.get(k, set())}))
"""

PLAIN_RMSPROP = {"fuse": False, "optimizer": "rmsprop"}


def kernels_runs_add_after_warmup(runs, steps=None):
    """The kernel signatures that ``runs`` ([image size, batch, width, TrainConfig changes],
    7 classes) need after ``warmup()`` (taking ``steps`` instead of its own, if given): in a
    process of their own, so that only the warmup has run kernels before them."""
    asked = json.dumps({"steps": steps, "runs": runs})
    child = subprocess.run([sys.executable, "-c", RUNS_AFTER_WARMUP, asked], capture_output=True,
                           text=True, cwd=REPO, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_after_the_warmup_runs_need_no_other_kernel():
    """What a run needs is read off Numba's dispatchers: the argument types each kernel
    holds machine code for, compiled or loaded from the disk cache. A type a run adds after
    the warmup is one it would compile, with a cold cache, after the warmup. Runs of each
    shape, small and large batches and widths, every optimizer, fused or not, add none.

    The warmup's shapes together cover these runs, one shape alone would not: at 8 px with
    batches of 8 nothing takes the parallel forms of the channels-last 1x1 convolution,
    which a batch of 32 there (or width 1.4) does; the 28 px shape compiles them."""
    runs = [[size, batch, width, changes] for size in (8, 28, 32)
            for batch, width in ((2, 0.35), (32, 1.4)) for changes in ({}, PLAIN_RMSPROP)]
    runs += [[224, 2, 0.5, {}], [224, 2, 0.5, PLAIN_RMSPROP]]
    runs += [[8, 13, 1.0, changes] for changes in (
        {"optimizer": "rmsprop", "momentum": 0.0}, {"optimizer": "rmsprop-tf"},
        {"optimizer": "adam"}, {"optimizer": "adamw"}, {"momentum": 0.0}, {"fuse": False})]
    assert kernels_runs_add_after_warmup(runs) == {}


def test_without_its_plain_rmsprop_step_the_warmup_would_miss_kernels():
    """The check above can fail: a warmup of the default run alone leaves RMSprop's update
    and the plain layers' kernels to the first run that needs them."""
    missed = kernels_runs_add_after_warmup([[8, 8, 0.5, {"optimizer": "rmsprop"}],
                                            [8, 8, 0.5, {"fuse": False}]], steps=[{}])
    assert {"tinymbv2.kernels.numba.optim._rmsprop_range",
            "tinymbv2.kernels.numba.batchnorm._forward_eval"} <= set(missed)
