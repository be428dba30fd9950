"""``tinymbv2 warmup``: what it prints, its one error, and that it compiles what a run needs."""
from __future__ import annotations

import argparse

import numpy as np

from tinymbv2.cli.warmup import add_warmup, run_warmup
from tinymbv2.kernels.numba import cache, compiling
from tinymbv2.train import warmup as warmup_module
from tinymbv2.train.warmup import CASES, WarmupCase, Warmed, one_step_each, warmup


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
    assert lines[0].startswith("warming up the numba kernels: a training and an inference step")
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


def test_after_the_warmup_a_run_of_that_shape_compiles_nothing():
    """The warmup's steps go through the code a run uses: another batch size, more steps
    and an evaluation of the same shape then find every kernel compiled."""
    case = WarmupCase("digits", 1, 8)
    (warmed,) = warmup(cases=[case], batch_size=4)
    assert warmed.case == case and warmed.dtype == "float32" and warmed.seconds > 0
    before = len(compiling.compiled())
    one_step_each(case, np.dtype(np.float32), batch_size=13, num_classes=7)
    assert compiling.compiled()[before:] == []
