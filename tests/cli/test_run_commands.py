"""The training commands end to end on the bundled digits: they learn, resume, and fail cleanly.

One short run (module-scoped) is shared by the eval, predict and finetune tests.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import tinymbv2.fusion
from tinymbv2.cli import main
from tinymbv2.data import load_dataset
from tinymbv2.train import load_state

# A quick digits recipe: 8x8 images, the small-input network at width 0.35.
RECIPE = ["--dataset", "digits", "--width", "0.35", "--batch-size", "32", "--optimizer", "adam",
          "--lr", "0.005", "--schedule", "cosine", "--shift", "0", "--dropout", "0.0",
          "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", *RECIPE, "--epochs", "4", "--out", str(out)]) == 0
    return out


def test_a_short_digits_run_learns_and_writes_its_outputs(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.75  # chance is 0.10
    assert len(metrics["history"]["train_loss"]) == 4
    assert metrics["history"]["train_loss"][-1] < metrics["history"]["train_loss"][0]
    for name in ("model.npz", "learning_curves.png", "confusion_matrix.png"):
        assert (trained / name).stat().st_size > 1000
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 359 and np.trace(cm) / cm.sum() == pytest.approx(metrics["test_accuracy"])
    with np.load(trained / "model.npz", allow_pickle=False) as data:  # pickle-free
        assert "model/classifier.1.weight" in data.files
    assert metrics["config"]["fuse"] is True  # fused by default
    assert load_state(trained / "model.npz")["config"]["fuse"] is True


def test_eval_reproduces_the_test_accuracy(trained, capsys):
    assert main(["eval", str(trained / "model.npz"), "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    expected = json.loads((trained / "metrics.json").read_text())["test_accuracy"]
    assert f"accuracy {expected:.4f}" in out


def test_predict_gives_top_k_probabilities_for_an_image_file(trained, tmp_path, capsys):
    from PIL import Image

    ds = load_dataset("digits")
    path = tmp_path / "digit.png"
    Image.fromarray((ds.test.images[0, 0] * 255).astype(np.uint8)).save(path)
    assert main(["predict", str(trained / "model.npz"), str(path), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ")
    pairs = [p.split() for p in line.split(": ", 1)[1].split(", ")]
    probs = [float(p) for _, p in pairs]
    assert len(pairs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_stop_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *RECIPE, "--epochs", "2", "--out", str(full)]) == 0
    assert main(["train", *RECIPE, "--epochs", "2", "--stop-after", "1", "--out", str(part)]) == 0
    assert load_state(part / "model.npz")["epoch"] == 1
    assert main(["train", *RECIPE, "--epochs", "2", "--out", str(part),
                 "--resume", str(part / "model.npz")]) == 0
    a, b = load_state(full / "model.npz")["model"], load_state(part / "model.npz")["model"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_finetune_trains_only_the_new_head(trained, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", str(trained / "model.npz"), *RECIPE, "--epochs", "1",
                 "--out", str(out)]) == 0
    before = load_state(trained / "model.npz")["model"]
    after = load_state(out / "model.npz")["model"]
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {"classifier.1.weight", "classifier.1.bias"}  # BN statistics kept too


def test_search_writes_a_results_table(tmp_path, capsys):
    out = tmp_path / "search"
    space = '{"lr": [0.001, 0.005]}'
    assert main(["search", *RECIPE, "--epochs", "1", "--space", space, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [float(r["lr"]) for r in rows] == [0.001, 0.005]
    best = json.loads((out / "best.json").read_text())
    assert best["val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert "best trial" in capsys.readouterr().out


@pytest.fixture
def fuse_calls(monkeypatch):
    """The models tinymbv2.fusion.fuse is called with from outside (it still fuses them;
    its own recursive calls on the submodules are not counted)."""
    calls, depth, real = [], [0], tinymbv2.fusion.fuse

    def spy(model):
        if depth[0] == 0:
            calls.append(model)
        depth[0] += 1
        try:
            return real(model)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(tinymbv2.fusion, "fuse", spy)
    return calls


def test_no_fuse_reaches_the_trainer_and_the_default_run_is_fused(tmp_path, fuse_calls):
    plain, fused = tmp_path / "plain", tmp_path / "fused"
    assert main(["train", *RECIPE, "--epochs", "1", "--no-fuse", "--out", str(plain)]) == 0
    assert fuse_calls == []
    assert json.loads((plain / "metrics.json").read_text())["config"]["fuse"] is False
    assert load_state(plain / "model.npz")["config"]["fuse"] is False
    assert main(["train", *RECIPE, "--epochs", "1", "--out", str(fused)]) == 0
    assert fuse_calls and all(m is fuse_calls[0] for m in fuse_calls)  # the one plain model
    assert json.loads((fused / "metrics.json").read_text())["config"]["fuse"] is True


def test_eval_and_predict_fuse_unless_told_not_to(trained, tmp_path, fuse_calls, capsys):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.fromarray((load_dataset("digits").test.images[0, 0] * 255).astype(np.uint8)).save(path)
    ckpt = str(trained / "model.npz")
    outputs = {}
    for command in (["eval", ckpt, "--dataset", "digits"], ["predict", ckpt, str(path)]):
        assert main(command + ["--no-fuse"]) == 0
        assert fuse_calls == []
        plain = capsys.readouterr().out
        assert main(command) == 0
        assert len(fuse_calls) == 1
        fuse_calls.clear()
        outputs[command[0]] = (plain, capsys.readouterr().out)
    expected = json.loads((trained / "metrics.json").read_text())["test_accuracy"]
    assert all(f"accuracy {expected:.4f}" in out for out in outputs["eval"])
    assert outputs["predict"][0].split(": ")[1].split()[0] == outputs["predict"][1].split(": ")[1].split()[0]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "missing.npz", "--dataset", "digits"], "no checkpoint file at missing.npz"),
        (["train", "--dataset", "cifar10"], "give --data-dir"),
        (["train", "--dataset", "mnist-idx", "--data-dir", "/nonexistent"], "does not exist"),
        (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["train", "--lr", "-1"], "expected a positive float"),
        (["search", "--space", "[1, 2]"], "--space must be a non-empty JSON object"),
        (["predict", "missing.npz", "x.png"], "no checkpoint file at missing.npz"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_checkpoint_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    assert main(["eval", str(bad), "--dataset", "digits"]) == 2
    assert "bad.npz is not a readable .npz checkpoint" in capsys.readouterr().err
