"""The ``tinymbv2`` command line: output of ``summary`` and one-line errors with exit code 2."""
import subprocess
import sys

import pytest

from tinymbv2.cli import COMMANDS, build_parser, main
from tinymbv2.cli.args import train_config


def test_summary_prints_the_table(capsys):
    assert main(["summary", "--width", "0.5", "--resolution", "160"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "MobileNetV2, input 1x3x160x160"
    assert "total parameters:    1,968,680" in out
    assert "(50.2M:" in out  # REFERENCE.md: width 0.5 at 160 px


def test_summary_options_change_the_model(capsys):
    assert main(["summary", "--resolution", "32", "--small-input", "--classes", "10",
                 "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "MobileNetV2, input 1x1x32x32"
    assert "total parameters:    2,236,106" in out  # 2,236,682 minus the 32*2*9 stem weights
    line = next(x for x in out.splitlines() if x.startswith("features.18.0"))
    assert "1x1280x4x4" in line
    assert main(["summary", "--arch", "seed-article"]) == 0
    assert "total multiply-adds: 145,786,880" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["summary", "--width", "-1"], "argument --width: expected a positive float, got '-1'"),
    (["summary", "--resolution", "abc"], "argument --resolution: expected a positive int, got 'abc'"),
    (["summary", "--widht", "1"], "unrecognized arguments: --widht 1"),
    (["summary", "--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    ([], "a command is required (one of: summary, train"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("tinymbv2")


def test_python_dash_m_runs_and_fails_cleanly():
    ok = subprocess.run([sys.executable, "-m", "tinymbv2", "summary", "--width", "0.35",
                         "--resolution", "96"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "(11.9M:" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "tinymbv2", "summary", "--width", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "tinymbv2 summary: error: argument --width: expected a positive float, got '0'\n"


def test_commands_are_a_registry():
    assert set(COMMANDS) == {"summary", "train", "eval", "predict", "finetune", "search", "warmup",
                             "export"}
    args = build_parser().parse_args(["summary"])
    assert (args.width, args.resolution, args.classes, args.in_channels, args.small_input) == (
        1.0, 224, 1000, 3, False)


@pytest.mark.parametrize("argv", [["train"], ["eval", "m.npz"], ["predict", "m.npz", "a.png"],
                                  ["finetune", "m.npz"], ["search"]])
def test_no_fuse_is_offered_by_every_command_that_runs_a_model(argv):
    parser = build_parser()
    assert parser.parse_args(argv).fuse is True
    assert parser.parse_args(argv + ["--no-fuse"]).fuse is False
    if argv[0] in ("train", "finetune", "search"):  # it becomes the run's TrainConfig.fuse
        assert train_config(parser.parse_args(argv + ["--no-fuse"]), "out").fuse is False
        assert train_config(parser.parse_args(argv), "out").fuse is True

