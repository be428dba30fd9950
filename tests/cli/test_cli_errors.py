"""Every way a user's input can be wrong gives one line ``tinymbv2 <command>: error: ...`` on
stderr and exit code 2, naming the file or the argument (issue 20, item 6).

The broken files are made here from one short run: a checkpoint with an array taken out,
one with its JSON document damaged, a truncated one, a PNG claiming 14000 x 14000 pixels.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from tinymbv2.cli import main, one_line
from tinymbv2.data import readers

RECIPE = ["--dataset", "digits", "--width", "0.35", "--batch-size", "32", "--optimizer", "adam",
          "--lr", "0.005", "--schedule", "cosine", "--shift", "0", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", *RECIPE, "--epochs", "1", "--out", str(out)]) == 0
    return out / "model.npz"


def members(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def rewrite(src, dst, drop=(), meta=None):
    """``src`` written again to ``dst`` without the members ``drop``; ``meta``: another
    ``__meta__`` document (a string)."""
    arrays = {k: v for k, v in members(src).items() if k not in drop}
    if meta is not None:
        arrays["__meta__"] = np.array(meta)
    np.savez(dst, **arrays)
    return dst


def fails(argv, capsys, command=None) -> str:
    """Run the CLI; assert exit code 2 and one stderr line of the command's error form."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith(f"tinymbv2 {command or argv[0]}: error: "), err
    return err


def test_a_checkpoint_missing_an_array_names_the_file_and_the_array(checkpoint, tmp_path, capsys):
    bad = rewrite(checkpoint, tmp_path / "partial.npz", drop=["model/features.0.0.weight"])
    for command in (["eval", str(bad), "--dataset", "digits"], ["predict", str(bad), "x.png"]):
        err = fails(command, capsys)
        assert f"{bad} is incomplete" in err and "'model/features.0.0.weight'" in err


def test_corrupt_metadata_json_names_the_file(checkpoint, tmp_path, capsys):
    bad = rewrite(checkpoint, tmp_path / "badmeta.npz", meta='{"format": oops')
    err = fails(["eval", str(bad), "--dataset", "digits"], capsys)
    assert f"{bad}: its __meta__ member is not valid JSON" in err and "Expecting value" in err
    listed = rewrite(checkpoint, tmp_path / "list.npz", meta="[1, 2]")
    err = fails(["predict", str(listed), "x.png"], capsys)
    assert f"{listed}: its __meta__ member holds a list, expected a JSON object" in err


@pytest.mark.parametrize("damage", ["truncated", "not-npz", "no-meta"])
def test_damaged_checkpoints_are_one_line_naming_the_file(checkpoint, tmp_path, capsys, damage):
    bad = tmp_path / "model.npz"
    raw = checkpoint.read_bytes()
    if damage == "truncated":  # a copy cut short, as by a full disk
        bad.write_bytes(raw[: len(raw) // 2])
        expected = f"{bad} is not a readable .npz checkpoint, damaged or truncated"
    elif damage == "not-npz":  # a PNG under a checkpoint's name
        from PIL import Image

        Image.new("L", (4, 4)).save(bad, format="PNG")
        expected = f"{bad} is not a readable .npz checkpoint"
    else:
        rewrite(checkpoint, bad, drop=["__meta__"])
        expected = f"{bad} has no __meta__ member; not a tinymbv2 checkpoint"
    for command in ("eval", "predict", "finetune"):
        argv = [command, str(bad)] + (["x.png"] if command == "predict" else [])
        assert expected in fails(argv, capsys)


def test_a_checkpoint_of_another_width_is_summarised_in_one_line(checkpoint, tmp_path, capsys):
    arrays = members(checkpoint)
    meta = json.loads(str(arrays["__meta__"]))
    meta["config"]["width"] = 1.0  # weights of width 0.35 under a config of width 1.0
    bad = rewrite(checkpoint, tmp_path / "wider.npz", meta=json.dumps(meta))
    err = fails(["eval", str(bad), "--dataset", "digits"], capsys)
    n_keys = sum(k.startswith("model/") for k in arrays)
    assert f"load_checkpoint: {bad}: load_state_dict: MobileNetV2 cannot load" in err
    assert "0 missing, 0 unexpected" in err and "of another shape; nothing was copied" in err
    assert "features.0.0.weight: shape mismatch, model has (32, 1, 3, 3), state_dict has (16, 1, 3, 3)" in err
    assert err.count("shape mismatch") == 4 and "more (all in the error's .problems)" in err
    assert len(err) < 1000 and n_keys > 200  # a few keys named, not one line per key


def test_an_image_too_large_is_refused_before_decoding(checkpoint, tmp_path, capsys):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 196 million pixels in 24 kB
    assert bomb.stat().st_size < 100_000
    err = fails(["predict", str(checkpoint), str(bomb)], capsys)
    assert f"predict: {bomb} is too large to read" in err
    assert "tinymbv2.data.readers.MAX_IMAGE_PIXELS" in err
    folder = tmp_path / "folder"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(folder / cls / f"{i}.png")
    (folder / "b" / "bomb.png").write_bytes(bomb.read_bytes())
    err = fails(["train", *RECIPE, "--dataset", "folder", "--data-dir", str(folder),
                 "--out", str(tmp_path / "run")], capsys)
    assert f"{folder / 'b' / 'bomb.png'} is too large to read" in err


def test_the_image_size_limit_is_a_setting_with_the_size_in_its_message(checkpoint, tmp_path,
                                                                        capsys, monkeypatch):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("L", (40, 30)).save(path)
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 1000)
    err = fails(["predict", str(checkpoint), str(path)], capsys)
    assert "40x30 = 1,200 pixels, over the limit of 1,000" in err
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 1200)
    assert main(["predict", str(checkpoint), str(path)]) == 0


def test_a_negative_seed_is_refused_when_parsing(capsys):
    for command in ("train", "search", "finetune"):
        argv = [command] + (["m.npz"] if command == "finetune" else []) + ["--seed", "-1"]
        err = fails(argv, capsys, command)
        assert "argument --seed: expected an integer >= 0" in err and "got '-1'" in err
    assert "got 'x'" in fails(["train", "--seed", "x"], capsys)


@pytest.mark.parametrize("kind, space, message", [
    ("grid", '{"lr": 5}', 'expected a list of values, e.g. [0.01, 0.1] (grid or random), or '
                          'for --kind random ["log", lo, hi]'),
    ("random", '{"lr": []}', "'lr': expected a list of values"),
    ("grid", '{"lr": ["log", 0.001, 0.1]}', "is a range, for --kind random; a grid takes a list"),
    ("random", '{"lr": ["log", 0, 0.1]}', "'lr': expected 0 < lo < hi, got [\"log\", 0, 0.1]"),
    ("random", '{"lr": ["uniform", 0.1]}', "expected [\"uniform\", lo, hi] with two numbers"),
    # names and values are checked by tinymbv2.train.search.check_space (the space, not --space)
    ("grid", '{"lrate": [0.1]}', "search: the space names ['lrate'], which are not training "
                                 "settings"),
    ("grid", '{"lr": [0.1, -1]}', 'search: the space gives {"lr": -1}, which a training run '
                                  'refuses'),
    # a range draws real numbers: an integer setting takes a list (it failed at trial 1 on 1.91)
    ("random", '{"shift": ["uniform", 0, 3]}', "the space's 'shift' is a range, which draws real "
                                               "numbers, but shift takes whole numbers: give a "
                                               "list of the values to try"),
    ("random", '{"epochs": ["uniform", 1, 4]}', "'epochs' is a range, which draws real numbers"),
    ("random", '{"batch_size": ["log", 16, 128]}', "but batch_size takes whole numbers"),
    ("random", '{"flip": ["uniform", 0, 1]}', "but flip takes True or False"),
    ("grid", '{"lr": [0.1', "--space is not valid JSON"),
])
def test_bad_search_spaces_say_the_expected_form(kind, space, message, capsys):
    err = fails(["search", "--kind", kind, "--space", space], capsys)
    assert message in err


def test_image_sizes_below_what_the_network_takes_are_refused(checkpoint, tmp_path, capsys):
    # run_training refuses them (the command line has no check of its own)
    err = fails(["train", *RECIPE, "--image-size", "1", "--out", str(tmp_path / "a")], capsys)
    assert "train: image_size 1 is smaller than this network takes" in err
    assert "at least 5x5 px" in err  # small-input network: 3 stride-2 layers, 2**2 + 1
    err = fails(["train", *RECIPE, "--image-size", "16", "--standard-input",
                 "--out", str(tmp_path / "b")], capsys)
    assert "at least 17x17 px" in err  # the paper's strides: 5 stride-2 layers, 2**4 + 1
    assert "at least 5x5" in fails(["eval", str(checkpoint), "--image-size", "4"], capsys)
    assert "at least 5x5" in fails(["search", "--image-size", "2", "--width", "0.35",
                                    "--out", str(tmp_path / "s")], capsys)
    assert "at least 5x5" in fails(["finetune", str(checkpoint), "--image-size", "3",
                                    "--out", str(tmp_path / "f")], capsys)
    assert not (tmp_path / "a" / "model.npz").exists()  # refused before training


def test_a_dataset_smaller_than_the_network_takes_is_refused(tmp_path, capsys):
    # digits are 8 px; the paper's strides need 17: refused, not trained on 1-pixel maps
    err = fails(["train", *RECIPE, "--standard-input", "--epochs", "1",
                 "--out", str(tmp_path / "run")], capsys)
    assert ("train: the image size of digits 8 is smaller than this network takes: its strided "
            "convolutions need images of at least 17x17 px") in err
    assert not (tmp_path / "run" / "model.npz").exists()
    # resized to 17 px, the same network trains
    assert main(["train", *RECIPE, "--standard-input", "--epochs", "1", "--image-size", "17",
                 "--out", str(tmp_path / "run17")]) == 0


def test_run_training_refuses_a_tiny_image_size_from_python(tmp_path):
    from tinymbv2.train import TrainConfig, run_training

    with pytest.raises(ValueError, match=r"^train: image_size 1 is smaller than this network "
                                         r"takes: .* at least 5x5 px"):
        run_training(TrainConfig(dataset="digits", width=0.35, image_size=1, epochs=1,
                                 out=str(tmp_path)), progress=False, log=None)
    assert not (tmp_path / "model.npz").exists()


@pytest.mark.parametrize("space, message", [
    ('{"image_size": [8, 2]}', 'search (trial {"image_size": 2}): image_size 2 is smaller than '
                               'this network takes'),
    ('{"small_input": [true, false]}', 'search (trial {"small_input": false}): image_size 8 is '
                                       'smaller than this network takes: its strided convolutions '
                                       'need images of at least 17x17 px'),
])
def test_a_search_space_of_sizes_the_network_refuses_stops_before_the_first_trial(
        tmp_path, capsys, space, message):
    err = fails(["search", *RECIPE, "--image-size", "8", "--space", space,
                 "--out", str(tmp_path)], capsys)
    assert message in err
    assert not any(tmp_path.iterdir())  # no trial ran


def test_channels_other_than_the_checkpoints_are_refused(checkpoint, capsys):
    err = fails(["eval", str(checkpoint), "--dataset", "digits", "--channels", "3"], capsys)
    assert (f"eval: channels 3 asked for, but the model of {checkpoint} takes 1-channel images"
            in err)
    err = fails(["finetune", str(checkpoint), "--channels", "3"], capsys)
    assert "channels 3 asked for, but the model of" in err
    assert "invalid choice: 2" in fails(["train", "--channels", "2"], capsys)


def test_eval_on_a_dataset_of_other_classes_says_so(checkpoint, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "two"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(folder / cls / f"{i}.png")
    err = fails(["eval", str(checkpoint), "--dataset", "folder", "--data-dir", str(folder)], capsys)
    assert "tells 10 classes apart, folder has 2" in err


def test_one_line_joins_a_message_of_several_lines():
    assert one_line(ValueError("first\n  second\n\nthird")) == "first; second; third"
    assert one_line(KeyError()) == "KeyError"


def test_the_next_run_removes_what_a_killed_checkpoint_write_left(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / "model.npz.q8z_k2mv.tmp"  # a write killed between mkstemp and os.replace
    stale.write_bytes(b"PK\x03\x04" + bytes(4096))
    then = time.time() - 3600  # an hour ago: no writer is still at it
    os.utime(stale, (then, then))
    keep = out / "notes.tmp"
    keep.write_text("the user's")
    assert main(["train", *RECIPE, "--epochs", "1", "--out", str(out)]) == 0
    assert not stale.exists() and keep.exists() and (out / "model.npz").is_file()
    assert [p.name for p in out.glob("*.tmp")] == ["notes.tmp"]
