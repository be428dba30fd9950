"""SSDLite on MobileNetV2 against torchvision's parts (its SSDLiteHead and _extra_block, and
mobilenet_v2's features cut at block 14's expansion, as SSDLiteFeatureExtractorMobileNet cuts
MobileNetV3): the same state_dict keys, and with the same weights the same outputs, running
statistics and gradients in float64."""
import numpy as np
import pytest
import torch
from benchmarks.torch_ssdlite import TorchSSDLite
from torchvision.models.detection.ssdlite import SSDLiteHead as TVSSDLiteHead
from torchvision.models.detection.ssdlite import _extra_block as tv_extra_block

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2.models import extra_block, ssdlite_mobilenet_v2
from tinymbv2.models.ssdlite import SSDLiteHead
from torch_twins import randomise_bn, rel

torch.set_num_threads(1)


def _pair(width, num_classes, in_channels=3, seed=0):
    torch.manual_seed(seed)
    tv = randomise_bn(TorchSSDLite(width, num_classes, in_channels), seed).double()
    ours = ssdlite_mobilenet_v2(num_classes, width_mult=width, in_channels=in_channels, seed=seed)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    return ours.double(), tv


def test_state_dict_keys_and_shapes_equal_torchvision_parts():
    torch.manual_seed(0)
    tv = TorchSSDLite(1.0, 91, 3)
    ours = ssdlite_mobilenet_v2(91, seed=0)
    theirs, mine = tv.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)
    assert all(mine[k].shape == tuple(v.shape) for k, v in theirs.items())
    assert sum(int(p.size) for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())
    assert ours.backbone.out_channels == [576, 1280, 512, 256, 256, 128]


@pytest.mark.parametrize("width,num_classes,in_channels,size", [
    (0.35, 11, 1, 96), (0.5, 5, 3, 128), (1.0, 3, 3, 96)])   # maps of 6x6 (8x8) down to 1x1
def test_train_mode_outputs_statistics_and_gradients_float64(width, num_classes, in_channels, size):
    ours, tv = _pair(width, num_classes, in_channels)
    ours.train(), tv.train()
    x = np.random.default_rng(1).standard_normal((4, in_channels, size, size))
    cls, box = ours(Tensor(x))
    tcls, tbox = tv(torch.from_numpy(x))
    anchors = 6 * sum(h * w for h, w in ours.feature_map_sizes(size, size))
    assert cls.shape == (4, anchors, num_classes) and box.shape == (4, anchors, 4)
    assert tuple(tcls.shape) == cls.shape and tuple(tbox.shape) == box.shape
    assert rel(cls.data, tcls) <= 1e-9 and rel(box.data, tbox) <= 1e-9
    theirs = tv.state_dict()
    for k, v in ours.state_dict().items():
        if "running" in k:
            assert rel(v, theirs[k]) <= 1e-9, k
    rng = np.random.default_rng(2)
    g_cls, g_box = rng.standard_normal(cls.shape), rng.standard_normal(box.shape)
    ((cls * Tensor(g_cls)).sum() + (box * Tensor(g_box)).sum()).backward()
    ((tcls * torch.from_numpy(g_cls)).sum() + (tbox * torch.from_numpy(g_box)).sum()).backward()
    tv_params = dict(tv.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = tv_params[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:      # a BN bias that the next BN cancels: noise
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name


def test_eval_outputs_float32():
    ours, tv = _pair(0.5, 11)
    ours.float().eval(), tv.float().eval()
    x = np.random.default_rng(3).standard_normal((1, 3, 128, 128)).astype(np.float32)
    with tinymbv2.no_grad():
        cls, box = ours(Tensor(x))
    with torch.no_grad():
        tcls, tbox = tv(torch.from_numpy(x))
    assert cls.data.dtype == np.float32
    assert rel(cls.data, tcls) <= 1e-4 and rel(box.data, tbox) <= 1e-4


def test_extra_block_and_head_alone_equal_torchvision():
    torch.manual_seed(4)
    tv_block = randomise_bn(tv_extra_block(40, 24, torch.nn.BatchNorm2d)).double()
    block = extra_block(40, 24)
    block.load_state_dict({k: v.numpy() for k, v in tv_block.state_dict().items()})
    block.double()
    tv_head = randomise_bn(TVSSDLiteHead([40, 24], [6, 4], 7, torch.nn.BatchNorm2d)).double()
    head = SSDLiteHead([40, 24], [6, 4], 7)
    head.load_state_dict({k: v.numpy() for k, v in tv_head.state_dict().items()})
    head.double()
    x = np.random.default_rng(5).standard_normal((3, 40, 9, 7))
    y = block(Tensor(x, requires_grad=True))
    ty = tv_block(torch.from_numpy(x))
    assert y.shape == (3, 24, 5, 4) and rel(y.data, ty) <= 1e-9
    xs = [Tensor(x, requires_grad=True), Tensor(y.data.copy(), requires_grad=True)]
    txs = [torch.from_numpy(x).requires_grad_(), ty.detach().clone().requires_grad_()]
    cls, box = head(xs)
    ref = tv_head(txs)
    assert cls.shape == (3, 9 * 7 * 6 + 5 * 4 * 4, 7) and box.shape == (3, 9 * 7 * 6 + 5 * 4 * 4, 4)
    assert rel(cls.data, ref["cls_logits"]) <= 1e-9 and rel(box.data, ref["bbox_regression"]) <= 1e-9
    g = np.random.default_rng(6).standard_normal(cls.shape)
    cls.backward(g)
    ref["cls_logits"].backward(torch.from_numpy(g))
    for a, b in zip(xs, txs):                             # the gradient reaches each map
        assert rel(a.grad, b.grad) <= 1e-9


def test_head_and_extras_get_torchvisions_init():
    model = ssdlite_mobilenet_v2(11, width_mult=1.0, seed=0)
    w = np.concatenate([m.weight.data.ravel() for m in model.head.modules()
                        if isinstance(m, tinymbv2.nn.Conv2d)])
    assert abs(w.std() - 0.03) < 0.001 and abs(w.mean()) < 0.001
    assert all(not np.any(m.bias.data) for m in model.head.modules()
               if isinstance(m, tinymbv2.nn.Conv2d) and m.bias is not None)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=1), "num_classes >= 2"), (dict(num_classes=11, size=16), "size >= 32 px")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssdlite_mobilenet_v2(**kwargs)


def test_summary_counts_every_parameter_and_splits_the_parts():
    model = ssdlite_mobilenet_v2(81, seed=0)             # COCO's 80 classes and the background
    s = tinymbv2.models.summary(model, (3, 320, 320))
    assert s.output_shape == (1, 3234, 81)
    assert s.total_params == sum(int(p.size) for p in model.parameters())
    parts = {p: s.part(p) for p in ("backbone.features", "backbone.extra", "head.classification_head",
                                    "head.regression_head")}
    assert sum(v[0] for v in parts.values()) == s.total_params
    assert sum(v[1] for v in parts.values()) == s.total_macs
    # the classification predictor of map 0: 3x3 depthwise on 576 channels, then 1x1 to 6 x 81
    dw, pw = 20 * 20 * 576 * 9, 20 * 20 * 576 * 6 * 81
    assert s.part("head.classification_head.module_list.0")[1] == dw + pw
    # the backbone's layers are MobileNetV2's without the classifier (1280 x 1000 + 1000)
    assert parts["backbone.features"][0] == 3_504_872 - 1_281_000
