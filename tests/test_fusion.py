"""tinymbv2.fuse: the fused view computes what the plain model computes, with the same state.

The fused and the unfused model are compared in float64, over two training steps and an
eval forward each, with each CPU kernel set, on planes the numba set keeps channels-last
(32 px) and on larger ones where its fused kernels run (64 and 96 px):

* reference kernels: the fused kernels are compositions of the same simple kernels, so the
  two models give the same bits -- logits, every gradient, the running statistics;
* numba kernels: they agree to 1e-12 relative -- the logits, the loss, every running
  statistic, and the gradient of the loss with respect to all the parameters (relative to
  its largest entry). Each parameter's own gradient agrees to 1e-10 relative: where the
  numba set's fused stage hands its output to a plane kept channels-last, it sums a
  BatchNorm's statistics in another order than the separate kernels do, and the gradients of
  the BatchNorm scales, sums that cancel to about 1e-4 of their terms, show those last bits
  at a few 1e-12 (measured: at most 7e-12).

The view shares the model's Parameter and buffer objects, leaves the model plain, runs the
fused ops where it should and leaves swapped-in layers alone.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn, optim, profiler
from tinymbv2 import functional as F
from tinymbv2.fusion import FusedInvertedResidual, FusedSequential, fuse
from tinymbv2.models import Conv2dNormActivation, InvertedResidual, mobilenet_v2, seed_article_net

TOL = 1e-12
PER_TENSOR_TOL = 1e-10  # see the module docstring
FUSED_OPS = {"ConvBatchNormEval", "InvertedResidualEval", "DepthwiseStageTrain"}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300))


def assert_agree(a: dict, b: dict):
    """Arrays of one kind (gradients, running means, ...) agree: all of them together to
    ``TOL`` relative (to their largest entry), each to ``PER_TENSOR_TOL``; an array that is
    rounding noise only (a BatchNorm's input mean after a BatchNorm, its bias gradient when
    a BatchNorm follows) to ``TOL`` of the largest entry."""
    whole = [np.concatenate([d[name].ravel() for name in a]) for d in (a, b)]
    assert rel(*whole) < TOL
    scale = np.abs(whole[0]).max()
    for name in a:
        if np.abs(a[name]).max() <= TOL * scale:
            assert np.abs(b[name]).max() <= TOL * scale, name
        else:
            assert rel(a[name], b[name]) < PER_TENSOR_TOL, name


def one_step(net, model, x, y):
    """A training forward and backward of ``net`` (``model`` or its view), then an eval
    forward: -> (loss, {name: grad}, state_dict, eval logits)."""
    net.train()
    tinymbv2.manual_seed(0)  # the same dropout mask for both
    loss = F.cross_entropy(net(Tensor(x)), y)
    model.zero_grad()
    loss.backward()
    grads = {k: p.grad.copy() for k, p in model.named_parameters()}
    net.eval()
    with tinymbv2.no_grad():
        logits = net(Tensor(x)).numpy().copy()
    return loss.item(), grads, model.state_dict(), logits


CASES = [  # (builder, input size): 32 px is channels-last in the numba set, 64/96 px are not
    (lambda: mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=0), 32),
    (lambda: mobilenet_v2(width_mult=0.35, num_classes=10, seed=1), 64),
    (lambda: mobilenet_v2(width_mult=0.5, num_classes=7, in_channels=1, seed=2), 96),
    (lambda: seed_article_net(width_mult=0.35, num_classes=10, seed=3), 64),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_and_plain_agree_in_float64(kernel_set, case):
    build, size = CASES[case]
    model = build().double()
    start = model.state_dict()
    rng = np.random.default_rng(case)
    x = rng.standard_normal((2, model.features[0][0].in_channels, size, size))
    y = rng.integers(0, model.classifier[1].out_features, 2)
    results = []
    for make_net in (lambda m: m, fuse):
        model.load_state_dict(start)
        net = make_net(model)
        results.append([one_step(net, model, x, y), one_step(net, model, x, y)])  # two steps
    for plain, fused in zip(*results):
        if kernel_set == "reference":  # compositions of the same kernels: the same bits
            assert plain[0] == fused[0]
            for p, f in zip(plain[1:], fused[1:]):
                for name in (p if isinstance(p, dict) else {"logits": p}):
                    a = p[name] if isinstance(p, dict) else p
                    b = f[name] if isinstance(f, dict) else f
                    np.testing.assert_array_equal(a, b, err_msg=name)
            continue
        assert rel(plain[0], fused[0]) < TOL
        assert rel(plain[3], fused[3]) < TOL
        assert_agree(plain[1], fused[1])  # the gradients
        counts = [k for k in plain[2] if k.endswith("num_batches_tracked")]
        assert all(plain[2][k] == fused[2][k] for k in counts)
        for stat in ("running_mean", "running_var"):
            assert_agree(*({k: v for k, v in state.items() if k.endswith(stat)}
                           for state in (plain[2], fused[2])))
    # the running statistics did move, twice, in both
    assert results[1][1][2]["features.1.conv.0.1.num_batches_tracked"] == 2
    assert rel(start["features.5.conv.1.1.running_mean"],
               results[1][1][2]["features.5.conv.1.1.running_mean"]) > 1e-3


def op_counts(net, x, train):
    net.train(train)
    with profiler.profile() as prof:
        if train:
            F.cross_entropy(net(Tensor(x)), np.zeros(len(x), np.int64)).backward()
        else:
            with tinymbv2.no_grad():
                net(Tensor(x))
    return {name: n for (name, phase), n in prof.calls.items() if phase == "forward"}


def assert_eval_agrees(model, fused, x):
    """The eval-mode outputs of ``model`` and its view ``fused`` agree to ``TOL``; returns
    the view's op counts."""
    model.eval()
    with tinymbv2.no_grad():
        want = model(Tensor(x)).numpy()
    counts = op_counts(fused, x, train=False)
    with tinymbv2.no_grad():
        got = fused(Tensor(x)).numpy()
    assert rel(want, got) < TOL
    return counts


def test_the_view_runs_the_fused_ops_and_the_model_stays_plain():
    model = mobilenet_v2(width_mult=0.35, num_classes=10, seed=0)
    fused = fuse(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    # training: every block's depthwise stage (block 1's with the stem's BatchNorm) is one op
    counts = op_counts(fused, x, train=True)
    assert counts["DepthwiseStageTrain"] == 17 and counts["BatchNormTrain"] == 17 + 1
    # inference: every block is one op; the stem and the head are conv + BatchNorm ops
    counts = op_counts(fused, x, train=False)
    assert counts["InvertedResidualEval"] == 17 and counts["ConvBatchNormEval"] == 2
    assert "BatchNormEval" not in counts and "ReLU6" not in counts
    # the plain model runs layer by layer: no fused op at all
    for train in (True, False):
        assert not FUSED_OPS & set(op_counts(model, x, train))
    assert type(model.features) is nn.Sequential
    assert all(type(b) is InvertedResidual for b in model.features[1:-1])
    assert type(model.features[0]) is Conv2dNormActivation


def test_the_view_shares_every_parameter_and_buffer():
    model = mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=0)
    fused = fuse(model)
    assert list(fused.state_dict()) == list(model.state_dict())
    for (k1, a), (k2, b) in zip(model.named_parameters(), fused.named_parameters()):
        assert k1 == k2 and a is b
    for (k1, a), (k2, b) in zip(model.named_buffers(), fused.named_buffers()):
        assert k1 == k2 and a is b
    # training the view trains the model: an optimizer on the model's parameters
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = model.features[0][0].weight.data.copy()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    F.cross_entropy(fused(Tensor(x)), np.arange(4)).backward()
    opt.step()
    assert not np.array_equal(before, model.features[0][0].weight.data)
    assert int(model.features[0][1].num_batches_tracked.data) == 1
    # a checkpoint of the view loads into a fresh plain model
    fresh = mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=5)
    fresh.load_state_dict(fused.state_dict())
    for (_, a), (_, b) in zip(fresh.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert isinstance(fused.features, FusedSequential)
    assert all(isinstance(b, FusedInvertedResidual) for b in fused.features[1:-1])


class Shifted(nn.Conv2d):
    """A user's conv: a plain Conv2d plus one, so that a fused pattern would be wrong."""

    def forward(self, x):
        return super().forward(x) + 1.0


def test_layers_a_user_swapped_in_are_left_alone(kernel_set):
    model = mobilenet_v2(width_mult=0.35, num_classes=10, seed=0).double()
    block = model.features[3]
    old = block.conv[1][0]
    shifted = Shifted(old.in_channels, old.out_channels, 3, old.stride, 1, groups=old.groups, bias=False,
                      dtype=np.float64)
    shifted.weight = old.weight
    block.conv[1][0] = shifted            # the depthwise conv of block 3
    model.features[5].conv[0][2] = nn.ReLU()  # the expansion activation of block 5
    fused = fuse(model)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64))
    counts = assert_eval_agrees(model, fused, x)
    assert counts["InvertedResidualEval"] == 15  # blocks 3 and 5 run layer by layer
    counts = op_counts(fused, x, train=True)
    assert counts["DepthwiseStageTrain"] == 15
    assert fused.features[3].conv[1][0] is shifted


def test_a_user_container_keeps_its_forward():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2),
                                      nn.ReLU6())

        def forward(self, x):
            return self.body(x) * 2.0

    model = Twice().double()
    fused = fuse(model)
    assert type(fused) is Twice and isinstance(fused.body, FusedSequential)
    assert fused.body[0] is model.body[0]
    x = Tensor(np.random.default_rng(2).standard_normal((3, 2, 4, 4)))
    model.eval()
    with tinymbv2.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), model(x).numpy(), rtol=1e-13)
    assert op_counts(fused, x.data, train=False) == {"ConvBatchNormEval": 1, "Mul": 1}


def test_fuse_checks_its_argument_and_keeps_what_has_nothing_to_fuse():
    with pytest.raises(TypeError, match="fuse: expected a tinymbv2 Module, got ndarray"):
        fuse(np.zeros(3))
    conv = nn.Conv2d(1, 1, 1)
    assert fuse(conv) is conv  # a layer is shared as it is
    fused = fuse(mobilenet_v2(width_mult=0.35, num_classes=10, seed=0))
    assert fuse(fused).features is fused.features  # fused containers are not fused again


def test_errors_are_the_layers_own():
    fused = fuse(mobilenet_v2(width_mult=0.35, num_classes=10, seed=0))
    fused.eval()
    bad = Tensor(np.zeros((1, 4, 32, 32), np.float32))
    with tinymbv2.no_grad(), pytest.raises(ValueError, match=r"Conv2d\(3, 16.*expected 3 channels"):
        fused(bad)
    fused.train()
    with pytest.raises(TypeError, match="expected float32 input like the layer's parameters"):
        fused(Tensor(np.zeros((1, 3, 32, 32))))


def _train_and_eval(net, model, x):
    """One training forward and backward of ``net`` (a random upstream gradient), then an
    eval forward: -> (output, {name: grad}, state_dict, eval output)."""
    net.train()
    out = net(Tensor(x))
    model.zero_grad()
    out.backward(np.random.default_rng(7).standard_normal(out.shape))
    grads = {k: p.grad.copy() for k, p in model.named_parameters() if p.grad is not None}
    state = model.state_dict()
    net.eval()
    with tinymbv2.no_grad():
        evaluated = net(Tensor(x)).numpy().copy()
    return out.numpy().copy(), grads, state, evaluated


def _compare(kernel_set, plain, fused):
    for p, f in zip(plain, fused):
        for name in (p if isinstance(p, dict) else {"output": None}):
            a = p[name] if isinstance(p, dict) else p
            b = f[name] if isinstance(f, dict) else f
            if kernel_set == "reference":
                np.testing.assert_array_equal(a, b, err_msg=name)
            else:
                np.testing.assert_allclose(a, b, rtol=PER_TENSOR_TOL, atol=1e-14, err_msg=name)


def test_batchnorm_variants_run_fused_with_the_plain_numbers(kernel_set):
    """BatchNorms without affine parameters, without running statistics, and with a
    cumulative average (momentum None): the view counts batches and normalises as the
    layers do, in training and in eval mode."""
    def unit(ci, co, **bn):
        return nn.Sequential(nn.Conv2d(ci, co, 3, 1, 1, bias=False, dtype=np.float64),
                             nn.BatchNorm2d(co, dtype=np.float64, **bn), nn.ReLU6())

    model = nn.Sequential(unit(3, 4, affine=False), unit(4, 4, track_running_stats=False),
                          unit(4, 5, momentum=None), nn.Conv2d(5, 2, 1, dtype=np.float64))
    start = model.state_dict()
    x = np.random.default_rng(3).standard_normal((2, 3, 20, 20))
    results = []
    for make in (lambda m: m, fuse):
        model.load_state_dict(start)
        results.append([_train_and_eval(make(model), model, x) for _ in range(2)])
    for plain, fused in zip(*results):
        _compare(kernel_set, plain, fused)
    assert int(model[2][1].num_batches_tracked.data) == 2
    assert model[1][1].running_mean is None


def test_a_partly_frozen_model_trains_fused_with_the_plain_numbers(kernel_set):
    """Fine-tuning: frozen layers (no gradient, BatchNorms in eval mode) among training ones."""
    model = mobilenet_v2(width_mult=0.35, num_classes=10, seed=4).double()
    for block in list(model.features)[:-4]:
        block.requires_grad_(False)
    start = model.state_dict()
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64))
    results = []
    for make in (lambda m: m, fuse):
        model.load_state_dict(start)
        net = make(model)
        net.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
        tinymbv2.manual_seed(0)
        out = net(Tensor(x))
        model.zero_grad()
        out.backward(np.random.default_rng(7).standard_normal(out.shape))
        results.append((out.numpy().copy(),
                        {k: p.grad.copy() for k, p in model.named_parameters() if p.grad is not None},
                        model.state_dict()))
    _compare(kernel_set, *results)
    assert set(results[0][1]) == set(results[1][1]) and len(results[0][1]) == 3 * 9 + 3 + 2


def test_a_block_with_layers_added_runs_layer_by_layer():
    model = mobilenet_v2(width_mult=0.35, num_classes=10, seed=0).double().eval()
    model.features[1].conv.append(nn.ReLU6())  # 4 layers, but not those it was built with
    model.features[2].conv.append(nn.ReLU6())  # 5 layers
    fused = fuse(model)
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64))
    assert assert_eval_agrees(model, fused, x)["InvertedResidualEval"] == 15


def test_a_batchnorm_of_other_channels_raises_its_own_error():
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
    fused = fuse(model).eval()
    with tinymbv2.no_grad(), pytest.raises(ValueError, match=r"BatchNorm2d\(16.*expected 16 channels"):
        fused(Tensor(np.zeros((1, 3, 4, 4), np.float32)))


def test_a_slice_of_a_fused_sequential_is_fused():
    fused = fuse(mobilenet_v2(width_mult=0.35, num_classes=10, seed=0))
    head = fused.features[:3]
    assert isinstance(head, FusedSequential) and head[1] is fused.features[1]
    fused.eval()
    x = np.random.default_rng(6).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert op_counts(head, x, train=False) == {"ConvBatchNormEval": 1, "InvertedResidualEval": 2}


def dilated_mobilenet(seed=0):
    """MobileNetV2 with its last three blocks' depthwise filters atrous: blocks 15 and 16 with
    dilation 2 and padding 2 (the planes keep their size, as DeepLab dilates a backbone),
    block 17's with dilation 2 but padding 1, a filter only its dilation tells apart from
    the ones the fused ops take."""
    model = mobilenet_v2(width_mult=0.35, num_classes=10, seed=seed).double()
    for block, padding in zip(model.features[15:18], (2, 2, 1)):
        depthwise = block.conv[-3][0]
        depthwise.dilation, depthwise.padding = (2, 2), (padding, padding)
    return model


def test_a_dilated_model_runs_fused_with_its_dilation(kernel_set):
    """The view never runs a dilated filter as an undilated one: the training stage takes the
    dilation where the padding equals it (blocks 15 and 16) and leaves block 17's filter to
    run layer by layer, the whole-block inference op leaves every dilated block so, conv +
    BatchNorm takes the dilation, and training and inference give the plain model's numbers,
    which dilation does change."""
    model = dilated_mobilenet()
    start = model.state_dict()
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((2, 3, 128, 128)), rng.integers(0, 10, 2)
    results = []
    for make_net in (lambda m: m, fuse):
        model.load_state_dict(start)
        results.append(one_step(make_net(model), model, x, y))
    (loss, grads, _, logits), (f_loss, f_grads, _, f_logits) = results
    assert rel(loss, f_loss) < TOL and rel(logits, f_logits) < TOL
    assert_agree(grads, f_grads)
    fused = fuse(model)
    train, infer = op_counts(fused, x, train=True), op_counts(fused, x, train=False)
    assert train["DepthwiseStageTrain"] == 17 - 1
    assert infer["InvertedResidualEval"] == 17 - 3
    assert infer["ConvBatchNormEval"] == 2 + 3 * 3  # stem, head; expand, depthwise, project
    undilated = mobilenet_v2(width_mult=0.35, num_classes=10, seed=0).double()
    undilated.load_state_dict(model.state_dict())
    undilated.eval()
    with tinymbv2.no_grad():
        assert rel(f_logits, fuse(undilated)(Tensor(x)).numpy()) > 1e-3


def segmentation_step(net, model, x, masks):
    """``one_step`` for a segmentation model: the per-pixel loss; its eval logits."""
    net.train()
    tinymbv2.manual_seed(0)  # the same dropout mask for both
    loss = F.cross_entropy(net(Tensor(x)), masks, ignore_index=255)
    model.zero_grad()
    loss.backward()
    grads = {k: p.grad.copy() for k, p in model.named_parameters()}
    net.eval()
    with tinymbv2.no_grad():
        logits = net(Tensor(x)).numpy().copy()
    return loss.item(), grads, model.state_dict(), logits


@pytest.mark.parametrize("head", ["aspp", "lraspp"])
def test_segmentation_heads_run_bn_relu_fused_with_the_plain_numbers(kernel_set, head):
    """The heads' conv-BN-ReLU units (ASPP's branches and projection, DeepLabHead's 3x3,
    LR-ASPP's) train with BatchNorm and ReLU as one op (``F.batch_norm_relu``) and give the
    plain model's loss, logits, gradients and running statistics, two steps running, in
    float64; for inference they are the conv-BN op, then the ReLU."""
    from tinymbv2.models import deeplabv3_mobilenet_v2

    model = deeplabv3_mobilenet_v2(5, 16, head, width_mult=0.35, seed=0).double()
    start = model.state_dict()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 64, 64))
    masks = rng.integers(0, 5, (2, 64, 64))
    masks[rng.random(masks.shape) < 0.05] = 255
    results = []
    for make_net in (lambda m: m, fuse):
        model.load_state_dict(start)
        net = make_net(model)
        results.append([segmentation_step(net, model, x, masks) for _ in range(2)])
    for plain, fused in zip(*results):
        if kernel_set == "reference":  # the fused kernel's clamp is ReLU's max(z, 0): same bits
            assert plain[0] == fused[0]
            np.testing.assert_array_equal(plain[3], fused[3])
            for name in plain[1]:
                np.testing.assert_array_equal(plain[1][name], fused[1][name], err_msg=name)
            continue
        assert rel(plain[0], fused[0]) < TOL and rel(plain[3], fused[3]) < TOL
        assert_agree(plain[1], fused[1])
        for stat in ("running_mean", "running_var"):
            assert_agree(*({k: v for k, v in state.items() if k.endswith(stat)}
                           for state in (plain[2], fused[2])))
    fused_net = fuse(model)
    train = op_counts_segmentation(fused_net, x, train=True)
    plain = op_counts_segmentation(model, x, train=True)
    # aspp: five branches' units and the projection and the 3x3 (all but the image pooling
    # branch, which keeps its ReLU on a 1x1 map); lraspp: its one conv-BN-ReLU
    fused_units = 1 + 3 + 1 + 1 if head == "aspp" else 1
    assert plain["ReLU"] - train.get("ReLU", 0) == fused_units
    infer = op_counts_segmentation(fused_net, x, train=False)
    assert infer["ReLU"] == plain["ReLU"]


def op_counts_segmentation(net, x, train):
    """``op_counts`` for a segmentation model (a per-pixel loss)."""
    net.train(train)
    with profiler.profile() as prof:
        if train:
            logits = net(Tensor(x))
            F.cross_entropy(logits, np.zeros((len(x),) + logits.shape[2:], np.int64)).backward()
        else:
            with tinymbv2.no_grad():
                net(Tensor(x))
    return {name: n for (name, phase), n in prof.calls.items() if phase == "forward"}
