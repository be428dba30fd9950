"""mobilenet_v2(activation="relu") against torchvision's mobilenet_v2 with every ReLU6 made a
ReLU (same weights: the same logits and gradients in float64), the ReLU6 network unchanged,
the option through TrainConfig and the command line, and what is refused."""
import numpy as np
import pytest
import torch
import torchvision

from tinymbv2 import Tensor, nn
from tinymbv2.cli import build_parser
from tinymbv2.cli.args import train_config
from tinymbv2.models import mobilenet_v2, seed_article_net
from tinymbv2.train import TrainConfig
from tinymbv2.train.build import build_model
from torch_twins import randomise_bn, rel


def _relu_twin():
    """torchvision's MobileNetV2-0.35 with every ReLU6 made a ReLU, BatchNorms randomised."""
    torch.manual_seed(0)
    tv = randomise_bn(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=7), 0)
    for module in list(tv.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU6):
                setattr(module, name, torch.nn.ReLU())
    return tv


def test_the_relu_network_is_torchvisions_with_relu():
    tv = _relu_twin()
    ours = mobilenet_v2(width_mult=0.35, num_classes=7, activation="relu", seed=0)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    ours.double().train()
    tv.double().train()
    ours.classifier[0].eval()  # Dropout off on both sides: the masks could not agree
    tv.classifier[0].eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 40))
    xo, xt = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(xo), tv(xt)
    assert rel(y.data, ty) <= 1e-9
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert rel(xo.grad, xt.grad) <= 1e-9
    acts = [m for m in ours.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    assert len(acts) == 35 and all(type(m) is nn.ReLU for m in acts)
    assert "activation='relu'" in repr(ours.features[2])


def test_relu6_stays_the_default_and_the_parameters_are_the_same():
    six, lin = mobilenet_v2(width_mult=0.35, seed=0), mobilenet_v2(width_mult=0.35, seed=0,
                                                                   activation="relu")
    assert all(type(m) is not nn.ReLU for m in six.modules())
    assert list(six.state_dict()) == list(lin.state_dict())
    assert type(seed_article_net(0.35, activation="relu").features[0][2]) is nn.ReLU
    with pytest.raises(ValueError, match=r"activation in \('relu6', 'relu'\)"):
        mobilenet_v2(activation="gelu")


def test_the_activation_through_the_command_line_and_the_config():
    args = build_parser().parse_args(["train", "--activation", "relu", "--width", "0.35"])
    config = train_config(args, "runs/x")
    assert config.activation == "relu"
    model = build_model(config, 1, 10)
    assert type(model.features[0][2]) is nn.ReLU
    assert TrainConfig().activation == "relu6"
    with pytest.raises(ValueError, match="activation 'relu' is for task 'classify'"):
        TrainConfig(task="segment", dataset="mnist-scenes", activation="relu").validate()
    with pytest.raises(ValueError, match="expected activation in"):
        TrainConfig(activation="tanh").validate()
