"""A plain ``torch.nn`` copy of a tinymbv2 model: the PyTorch side of the GPU checks.

torchvision may be missing where the GPU checks run (and a torchvision wheel is
tied to one torch build), so the reference is built from the tinymbv2 model
itself, module by module: Conv2d, BatchNorm2d, ReLU6, Linear, Dropout, pooling,
Sequential and the inverted residual block with its skip connection. Module
names are kept, so the ``state_dict`` keys are torchvision's and
``port.load_state_dict(to_torch_state_dict(model))`` copies the weights.
``tests/kernels/test_gpu.py`` checks the port against torchvision where both exist.

    port = torch_port(model)                 # same architecture, same weights
"""
from __future__ import annotations

import torch
from torch import nn

from tinymbv2 import nn as tnn
from tinymbv2.models import InvertedResidual, MobileNetV2, to_torch_state_dict


class _Residual(nn.Module):
    def __init__(self, conv: nn.Sequential, use_res_connect: bool):
        super().__init__()
        self.conv, self.use_res_connect = conv, use_res_connect

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class _Net(nn.Module):
    def __init__(self, features, classifier):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _port(m):
    """The torch module equivalent to tinymbv2 module ``m`` (weights not copied)."""
    if isinstance(m, MobileNetV2):
        return _Net(_port(m.features), _port(m.classifier))
    if isinstance(m, InvertedResidual):
        return _Residual(_port(m.conv), m.use_res_connect)
    if isinstance(m, tnn.Sequential):
        return nn.Sequential(*[_port(c) for c in m])
    if isinstance(m, tnn.Conv2d):
        return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                         groups=m.groups, bias=m.bias is not None)
    if isinstance(m, tnn.BatchNorm2d):
        return nn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
    if isinstance(m, tnn.ReLU6):
        return nn.ReLU6()
    if isinstance(m, tnn.Dropout):
        return nn.Dropout(m.p)
    if isinstance(m, tnn.Linear):
        return nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    raise TypeError(f"torch_port: no torch equivalent for {type(m).__name__}")


def torch_port(model) -> nn.Module:
    """A torch module with ``model``'s architecture, weights, dtype and modes, on the CPU."""
    port = _port(model)
    state = to_torch_state_dict(model)
    dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    port.to(dtype).load_state_dict(state)
    for name, m in model.named_modules():  # each module's own train/eval flag (a Dropout off alone)
        try:
            port.get_submodule(name).training = m.training
        except AttributeError:  # the parameter-free pool and flatten live in _Net.forward
            pass
    return port
