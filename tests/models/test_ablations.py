"""The ablations of the paper's Figure 6, built by arguments of ``mobilenet_v2``.

``bottleneck_activation="relu6"`` (Fig. 6a) and ``shortcut="expansion" | "none"`` (Fig. 6b)
change no parameter: same keys, same counts. Each variant is compared with a PyTorch twin
(torchvision's model, patched: a ReLU6 appended to each block, the residual switched off,
or a forward that adds the expanded tensors) in float64, logits and gradients; and its
fused view with the plain model.
"""
import numpy as np
import pytest
import torch
import torchvision

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.fusion import fuse
from tinymbv2.models import InvertedResidual, chunked_block, mobilenet_v2
from tinymbv2.models.mobilenetv2 import ExpansionShortcuts
from torch_twins import randomise_bn, rel

torch.set_num_threads(1)
VARIANTS = [
    dict(),
    dict(bottleneck_activation="relu6"),
    dict(shortcut="expansion"),
    dict(shortcut="none"),
]


def _model(seed=0, **ablation):
    return mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=seed, **ablation)


def test_the_defaults_are_the_paper_network():
    plain, explicit = _model(), _model(bottleneck_activation=None, shortcut="bottleneck")
    assert type(plain.features) is tinymbv2.nn.Sequential
    assert [b.use_res_connect for b in plain.blocks] == [b.use_res_connect for b in explicit.blocks]
    # 17 blocks: the 10 of the paper with an add, and at this width and small_input the
    # first of the 24-channel stage too (8 channels in and out, stride 1)
    assert sum(b.use_res_connect for b in plain.blocks) == 11
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with tinymbv2.no_grad():
        np.testing.assert_array_equal(plain.eval()(Tensor(x)).data, explicit.eval()(Tensor(x)).data)


@pytest.mark.parametrize("ablation", VARIANTS[1:])
def test_same_parameters_same_keys_and_shapes(ablation):
    base, model = _model(), _model(**ablation)
    assert list(model.state_dict()) == list(base.state_dict())
    assert all(model.state_dict()[k].shape == v.shape for k, v in base.state_dict().items())
    n = sum(int(p.size) for p in model.parameters())
    assert n == sum(int(p.size) for p in base.parameters()) == 408_938
    with tinymbv2.no_grad():
        y = model.eval()(Tensor(np.zeros((3, 3, 32, 32), np.float32)))
    assert y.shape == (3, 10)


def test_where_the_adds_sit():
    relu6, expansion, none = (_model(**v) for v in VARIANTS[1:])
    assert all(type(b.conv[-1]).__name__ == "ReLU6" for b in relu6.blocks)
    assert sum(b.use_res_connect for b in relu6.blocks) == 11
    assert not any(b.use_res_connect for b in none.blocks + expansion.blocks)
    assert isinstance(expansion.features, ExpansionShortcuts)
    # the expanded tensors that get the previous block's added: where the previous block
    # expanded to the same width at the same resolution (its depthwise stride comes after
    # its expansion), so also at some stage starts; here 11, counted through the model's
    # own method
    x, previous, adds = Tensor(np.zeros((1, 3, 32, 32), np.float32)), None, 0
    expansion.eval()
    with tinymbv2.no_grad():
        for layer in expansion.features:
            if isinstance(layer, InvertedResidual):
                n = 1 if layer.expand_ratio != 1 else 0
                expanded = layer.conv[:n](x) if n else x
                adds += previous is not None and previous.shape == expanded.shape
                x, previous = layer.forward_expansion_shortcut(x, previous)
            else:
                x, previous = layer(x), None
    assert adds == 11


def test_unknown_ablations_are_refused():
    with pytest.raises(ValueError, match="bottleneck_activation"):
        mobilenet_v2(bottleneck_activation="relu")
    with pytest.raises(ValueError, match="shortcut"):
        mobilenet_v2(shortcut="input")
    with pytest.raises(ValueError, match="chunked_block"):
        chunked_block(_model(bottleneck_activation="relu6").blocks[1].eval(),
                      Tensor(np.zeros((1, 16, 8, 8), np.float32)), 2)


def _twin_forward_expansion(tv, x):
    """torchvision's model run with the shortcut between expansions, written for torch."""
    previous = None
    for layer in tv.features:
        if isinstance(layer, torchvision.models.mobilenetv2.InvertedResidual):
            n = len(layer.conv) - 3  # 1 with an expansion layer, 0 without
            expanded = layer.conv[:n](x) if n else x
            if previous is not None and previous.shape == expanded.shape:
                expanded = expanded + previous
            x, previous = layer.conv[n:](expanded), expanded
        else:
            x, previous = layer(x), None
    return tv.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _twin(ablation, seed=0):
    torch.manual_seed(seed)
    tv = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    tv.features[0][0].stride = (1, 1)  # small_input
    tv.features[2].conv[1][0].stride = (1, 1)
    tv.features[2].use_res_connect = True  # 8 channels in and out now at stride 1: as ours
    randomise_bn(tv, seed)
    for block in tv.features[1:-1]:
        if ablation.get("bottleneck_activation") == "relu6":
            block.conv.append(torch.nn.ReLU6())
        if ablation.get("shortcut") in ("none", "expansion"):
            block.use_res_connect = False
    if ablation.get("shortcut") == "expansion":
        return tv, lambda x: _twin_forward_expansion(tv, x)
    return tv, tv


@pytest.mark.parametrize("ablation", VARIANTS)
def test_logits_and_gradients_equal_a_pytorch_twin_float64(ablation):
    tv, run = _twin(ablation)
    ours = _model(**ablation)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    ours.double().train()
    tv.double().train()
    ours.classifier[0].eval()  # Dropout off on both sides
    tv.classifier[0].eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    y, ty = ours(Tensor(x)), run(torch.from_numpy(x))
    assert rel(y.data, ty) <= 1e-9
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    theirs = dict(tv.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = theirs[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:  # a BN bias before a BN: rounding noise only
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name
    # eval mode too: running statistics moved alike
    ours.eval()
    tv.eval()
    with tinymbv2.no_grad(), torch.no_grad():
        assert rel(ours(Tensor(x)).data, run(torch.from_numpy(x))) <= 1e-9


@pytest.mark.parametrize("ablation", VARIANTS[1:])
def test_the_fused_view_computes_what_the_plain_model_does(kernel_set, ablation):
    model = _model(seed=4, **ablation).double()
    view = fuse(model)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    results = []
    for net in (model, view):
        net.train()
        tinymbv2.manual_seed(0)  # the same dropout mask for both
        loss = F.cross_entropy(net(Tensor(x)), np.array([1, 7]))
        model.zero_grad()
        loss.backward()
        grads = np.concatenate([p.grad.ravel() for p in model.parameters()])
        net.eval()
        with tinymbv2.no_grad():
            logits = net(Tensor(x)).numpy().copy()
        results.append((loss.item(), grads, logits))
        model.load_state_dict(_model(seed=4, **ablation).double().state_dict())  # same start
    (loss_a, grads_a, logits_a), (loss_b, grads_b, logits_b) = results
    assert abs(loss_a - loss_b) <= 1e-12 * abs(loss_a)
    assert rel(grads_b, grads_a) <= 1e-12
    assert rel(logits_b, logits_a) <= 1e-12
