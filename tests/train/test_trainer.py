"""The training loop on real data: it learns, resuming reproduces the run exactly, and it
trains through tinymbv2.fusion.fuse unless told not to."""
from __future__ import annotations

import numpy as np
import pytest

from fusion_spy import FusedView
import tinymbv2
import tinymbv2.fusion
from tinymbv2 import optim
from tinymbv2.data import DataLoader, RandomShift, load_dataset
from tinymbv2.models import mobilenet_v2
from tinymbv2.train import fit, load_checkpoint, load_state, save_checkpoint


def _setup(seed=0, init_seed=0):
    ds = load_dataset("digits")
    tinymbv2.manual_seed(seed)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True,
                         dropout=0.2, seed=init_seed)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    loader = DataLoader(ds.train.images[:256], ds.train.labels[:256], 64, seed=seed,
                        transform=RandomShift(1))
    return ds, model, opt, sched, loader


def _weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_resuming_from_an_epoch_checkpoint_reproduces_the_run_exactly(tmp_path):
    ds, model, opt, sched, loader = _setup()
    fit(model, opt, loader, ds.val, epochs=3, scheduler=sched, progress=False, log=None)
    uninterrupted = _weights(model)

    ds, model, opt, sched, loader = _setup()
    ckpt = tmp_path / "ckpt.npz"
    fit(model, opt, loader, ds.val, epochs=3, scheduler=sched, checkpoint_path=ckpt,
        stop_after=1, progress=False, log=None)
    tinymbv2.manual_seed(123)  # whatever happens in between must not matter
    ds, model, opt, sched, loader = _setup(init_seed=7)  # fresh objects, other init
    history = fit(model, opt, loader, ds.val, epochs=3, scheduler=sched, checkpoint_path=ckpt,
                  resume_from=ckpt, progress=False, log=None)
    assert history["epoch"] == [1, 2, 3]
    resumed = _weights(model)
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], uninterrupted[k], err_msg=k)


def test_a_failed_load_changes_nothing(tmp_path):
    ds, model, opt, sched, loader = _setup()
    before = _weights(model)
    other = mobilenet_v2(width_mult=0.5, num_classes=10, in_channels=1, small_input=True)
    path = save_checkpoint(tmp_path / "other.npz", other)
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(path, model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_recalibrate_batchnorm_makes_eval_match_the_batch_statistics(monkeypatch):
    import importlib
    import pkgutil

    import tinymbv2.functional
    from tinymbv2.functional import batchnorm as batchnorm_ops
    from tinymbv2.nn import BatchNorm2d
    from tinymbv2.train import recalibrate_batchnorm

    ds, model, opt, sched, loader = _setup()
    fit(model, opt, loader, None, epochs=1, scheduler=sched, progress=False, log=None)
    x = ds.val.images[:256]
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    model.eval()
    with tinymbv2.no_grad():
        stale = model(tinymbv2.Tensor(x)).numpy()
    values = {}  # BatchNorm's running mean (by id) -> M, the values per channel it normalised
    update = batchnorm_ops.update_running_stats

    def counting(running_mean, running_var, stats, eps, momentum, m):
        values[id(running_mean)] = m
        return update(running_mean, running_var, stats, eps, momentum, m)

    for info in pkgutil.iter_modules(tinymbv2.functional.__path__):  # every op that trains a BN
        module = importlib.import_module(f"tinymbv2.functional.{info.name}")
        if getattr(module, "update_running_stats", None) is update:
            monkeypatch.setattr(module, "update_running_stats", counting)
    recalibrate_batchnorm(model, x, batch_size=256)  # one batch: exactly its statistics
    monkeypatch.undo()
    assert not model.training
    assert all(m.momentum == 0.1 for m in model.modules() if hasattr(m, "running_mean"))
    with tinymbv2.no_grad():
        evaluated = model(tinymbv2.Tensor(x)).numpy()
        # the running variance is the unbiased one, M / (M - 1) times the batch's own:
        # undo that factor and eval must give the training-mode output up to rounding
        for bn in bns:
            m = values[id(bn.running_mean.data)]
            bn.running_var.data *= (m - 1) / m
        exact = model(tinymbv2.Tensor(x)).numpy()
        model.train()
        batch_stats = model.classifier[1](model.flatten(model.pool(model.features(
            tinymbv2.Tensor(x))))).numpy()
    scale = np.abs(batch_stats).max()
    assert len(values) == len(bns)
    assert np.abs(exact - batch_stats).max() < 1e-4 * scale
    assert np.abs(evaluated - batch_stats).max() < 0.1 * scale
    assert np.abs(stale - batch_stats).max() > 3 * np.abs(evaluated - batch_stats).max()


@pytest.fixture
def fuse_spy(monkeypatch):
    """Replace tinymbv2.fusion.fuse; the list collects (model, view) per call."""
    calls = []

    def fuse(model):
        view = FusedView(model)
        calls.append((model, view))
        return view

    monkeypatch.setattr(tinymbv2.fusion, "fuse", fuse)
    return calls


def test_fit_trains_the_fused_view_and_saves_the_plain_model(fuse_spy, tmp_path):
    ds, model, opt, sched, loader = _setup()
    before = _weights(model)
    ckpt = tmp_path / "ckpt.npz"
    history = fit(model, opt, loader, ds.val, epochs=1, scheduler=sched, checkpoint_path=ckpt,
                  progress=False, log=None)  # fuse=True is the default
    assert len(fuse_spy) == 1 and fuse_spy[0][0] is model
    view = fuse_spy[0][1]
    val_batches = -(-len(ds.val.labels) // 256)
    assert view.calls == len(loader) + val_batches  # every forward went through the view
    saved = load_state(ckpt)["model"]
    assert saved.keys() == before.keys()  # the plain model's keys, not the view's "inner.*"
    for k, v in model.state_dict().items():  # the plain model holds the trained weights
        np.testing.assert_array_equal(saved[k], v, err_msg=k)
    assert history["best_state"].keys() == before.keys()
    assert not np.array_equal(before["classifier.1.weight"], model.classifier[1].weight.numpy())
    assert model.training  # as after an unfused fit: the plain model is left in train mode


def test_fit_with_fuse_false_never_calls_fuse(fuse_spy):
    ds, model, opt, sched, loader = _setup()
    fit(model, opt, loader, ds.val, epochs=1, scheduler=sched, progress=False, log=None,
        fuse=False)
    assert fuse_spy == []


def test_fused_and_plain_training_give_the_same_weights_with_an_exact_view(fuse_spy):
    """A view that computes exactly what the model computes trains it to the same bits."""
    ds, model, opt, sched, loader = _setup()
    fit(model, opt, loader, ds.val, epochs=1, scheduler=sched, progress=False, log=None)
    fused = _weights(model)
    ds, model, opt, sched, loader = _setup()
    fit(model, opt, loader, ds.val, epochs=1, scheduler=sched, progress=False, log=None,
        fuse=False)
    for k, v in _weights(model).items():
        np.testing.assert_array_equal(fused[k], v, err_msg=k)

