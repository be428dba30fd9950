"""The module system: registration, walking the tree, modes, dtypes, state_dict, repr."""
import copy
import pickle

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.nn import Parameter, StateDictError


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.scale = Parameter(np.ones(4, dtype=np.float32))
        self.register_buffer("steps", np.zeros(2, dtype=np.float32))
        self.register_buffer("cache", np.zeros(1, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.bn(self.conv(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.block(x))


def test_parameter_is_a_trainable_tensor_sharing_its_array():
    arr = np.zeros(3, dtype=np.float64)
    p = Parameter(arr)
    assert p.requires_grad and p.data is arr and p.dtype == np.float64
    assert Parameter([1.0, 2.0]).dtype == np.float32
    assert not Parameter(arr, requires_grad=False).requires_grad
    assert Parameter(Tensor(arr)).data is arr
    assert repr(p).startswith("Parameter containing:")


def test_registration_and_walking_the_tree():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["block.scale", "block.conv.weight", "block.bn.weight", "block.bn.bias",
                     "head.2.weight", "head.2.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "block.steps", "block.cache", "block.bn.running_mean", "block.bn.running_var",
        "block.bn.num_batches_tracked"]
    assert [n for n, _ in net.named_modules()] == [
        "", "block", "block.conv", "block.bn", "head", "head.0", "head.1", "head.2"]
    assert [n for n, _ in net.named_children()] == ["block", "head"]
    assert list(net.children())[1] is net.head
    assert len(list(net.modules())) == 8
    assert len(list(net.parameters(recurse=False))) == 0
    assert sum(p.size for p in net.parameters()) == 4 + 4 * 27 + 8 + 2 * 4 + 2
    assert net.block.bn.num_batches_tracked.dtype == np.int64


def test_a_shared_parameter_is_listed_once():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    seq = nn.Sequential(a, b)
    assert len(list(seq.parameters())) == 3
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_assignment_rules():
    m = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="cannot assign ndarray to parameter 'weight'"):
        m.weight = np.zeros((3, 2))
    m.bias = None  # a parameter slot may be emptied
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    bn = nn.BatchNorm2d(2)
    bn.running_mean = np.full(2, 5.0, dtype=np.float32)  # a buffer may be replaced by an array
    assert isinstance(bn.running_mean, Tensor) and bn.state_dict()["running_mean"][0] == 5.0
    with pytest.raises(TypeError, match="buffer 'running_var'"):
        bn.running_var = "x"

    class Early(nn.Module):
        def __init__(self):
            self.w = Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    with pytest.raises(ValueError, match="without '.'"):
        m.add_module("a.b", nn.ReLU())
    with pytest.raises(TypeError, match="expected a Parameter"):
        m.register_parameter("w2", np.zeros(1))
    del m.weight
    assert list(m.parameters()) == [] and not hasattr(m, "weight")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        m.nothing


def test_train_eval_are_recursive_and_return_self():
    net = Net()
    assert net.eval() is net
    assert all(not m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    with pytest.raises(TypeError, match="bool"):
        net.train("no")


def test_requires_grad_false_freezes_and_zero_grad_clears():
    net = Net()
    net.block.requires_grad_(False)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32))
    y = net(x)
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert all(p.grad is None for p in net.block.parameters())
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.head.parameters())
    assert np.abs(net.head[2].bias.grad - 2.0).max() == 0  # dL/db = batch size for ones
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in net.head.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_to_double_float_cast_floats_keep_objects_and_int_buffers():
    net = Net()
    weight = net.block.conv.weight
    net.block.conv.weight.grad = np.ones(weight.shape, dtype=np.float32)
    assert net.double() is net
    assert net.block.conv.weight is weight and weight.dtype == np.float64
    assert weight.grad.dtype == np.float64
    assert all(t.dtype == np.float64 for t in net.parameters())
    assert net.block.bn.running_var.dtype == np.float64
    assert net.block.bn.num_batches_tracked.dtype == np.int64
    y = net(Tensor(np.zeros((1, 3, 4, 4))))
    assert y.dtype == np.float64
    net.float()
    assert all(t.dtype == np.float32 for t in net.parameters())
    net.to("cpu", dtype=np.float64)
    assert net.head[2].weight.dtype == np.float64
    with pytest.raises(TypeError, match="device"):
        net.to("tpu")
    with pytest.raises(TypeError, match="floating dtype"):
        net.to(np.int32)


def test_apply_visits_children_before_parents():
    seen = []
    Net().apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "Block", "AdaptiveAvgPool2d", "Flatten", "Linear",
                    "Sequential", "Net"]


def test_repr_is_readable():
    text = repr(Net())
    assert text.splitlines()[:3] == [
        "Net(",
        "  (block): Block(",
        "    (conv): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)",
    ]
    assert "    (2): Linear(in_features=4, out_features=2, bias=True)" in text
    assert repr(nn.Conv2d(8, 8, 3, 2, 1, groups=8)) == (
        "Conv2d(8, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=8)")
    assert repr(nn.ReLU6()) == "ReLU6()"


def test_state_dict_is_flat_numpy_copies_in_torch_order():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == [
        "block.scale", "block.steps", "block.conv.weight", "block.bn.weight", "block.bn.bias",
        "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked",
        "head.2.weight", "head.2.bias"]  # 'block.cache' is not persistent
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    nbt = sd["block.bn.num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == () and int(nbt) == 0
    sd["head.2.bias"][...] = 123.0
    assert not np.any(net.head[2].bias.data == 123.0)  # a copy, not a view


def test_load_state_dict_roundtrip_in_place():
    a, b = Net(), Net()
    a.block.bn.num_batches_tracked.data[...] = 7
    weight = b.block.conv.weight
    array = weight.data
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.block.conv.weight is weight and weight.data is array  # copied into place
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    assert int(b.block.bn.num_batches_tracked.data) == 7
    b.load_state_dict({k: Tensor(v) if v.dtype.kind == "f" else v for k, v in a.state_dict().items()})
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert b.block.conv.weight.dtype == np.float32  # the model's dtype wins


def test_failed_load_lists_every_problem_and_changes_nothing():
    net = Net()
    before = net.state_dict()
    bad = {k: v + 1 for k, v in before.items()}
    del bad["block.bn.bias"], bad["head.2.weight"]
    bad["block.conv.weight"] = np.zeros((4, 3, 5, 5), dtype=np.float32)
    bad["extra.thing"] = np.zeros(1)
    with pytest.raises(StateDictError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    assert "4 problem(s)" in msg and "nothing was copied" in msg
    for key in ("block.bn.bias: missing", "head.2.weight: missing", "extra.thing: unexpected",
                "block.conv.weight: shape mismatch, model has (4, 3, 3, 3), state_dict has (4, 3, 5, 5)"):
        assert key in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # nothing changed
    assert isinstance(info.value, ValueError)


def test_a_load_failing_on_many_keys_is_summarised_in_one_line_with_the_details_kept():
    wide = nn.Sequential(*[nn.Linear(8, 8) for _ in range(30)])
    narrow = nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)]).state_dict()
    narrow["extra"] = np.zeros(1)
    del narrow["29.bias"]
    with pytest.raises(StateDictError) as info:
        wide.load_state_dict(narrow)
    err = info.value
    msg = str(err)
    assert "\n" not in msg and msg.startswith("load_state_dict: Sequential cannot load")
    assert "(61 problem(s): 1 missing, 1 unexpected, 59 of another shape; nothing was copied)" in msg
    assert "0.weight: shape mismatch, model has (8, 8), state_dict has (4, 4)" in msg
    assert msg.count("shape mismatch") == StateDictError.SHOWN and "; and 57 more" in msg
    assert err.missing == ["29.bias"] and err.unexpected == ["extra"]
    assert len(err.mismatched) == 59 and err.mismatched["3.bias"] == ((8,), (4,))
    assert len(err.problems) == 61 and err.details.splitlines() == err.problems
    assert "29.bias: missing from state_dict" in err.details
    assert isinstance(err, ValueError)


def test_non_strict_load_tolerates_keys_but_not_shapes():
    net = Net()
    sd = net.state_dict()
    sd.pop("head.2.bias")
    sd["head.2.weight"] = np.full((2, 4), 3.0, dtype=np.float32)
    sd["other"] = np.zeros(2)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["head.2.bias"] and unexpected == ["other"]
    assert np.all(net.head[2].weight.data == 3.0)
    sd["head.2.weight"] = np.zeros((4, 2))
    with pytest.raises(StateDictError, match="shape mismatch"):
        net.load_state_dict(sd, strict=False)
    with pytest.raises(TypeError, match="dict"):
        net.load_state_dict([1, 2])


def test_copy_and_pickle_keep_the_tree():
    net = Net()
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert [n for n, _ in clone.named_parameters()] == [n for n, _ in net.named_parameters()]
        assert clone.block.conv.weight is not net.block.conv.weight
        np.testing.assert_array_equal(clone.block.conv.weight.data, net.block.conv.weight.data)


def test_sequential_indexing_len_iteration_and_names():
    layers = [nn.ReLU(), nn.Identity(), nn.Linear(2, 2)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and [n for n, _ in tail.named_children()] == ["1", "2"]
    seq[1] = nn.ReLU6()
    assert isinstance(seq[1], nn.ReLU6)
    seq.append(nn.Flatten())
    assert len(seq) == 4 and [n for n, _ in seq.named_children()][-1] == "3"
    with pytest.raises(IndexError, match="out of range"):
        seq[4]
    with pytest.raises(TypeError, match="argument 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)
    x = Tensor(np.array([[-1.0, 7.0]], dtype=np.float32))
    small = nn.Sequential(nn.ReLU6(), nn.Identity())
    np.testing.assert_array_equal(small(x).data, [[0.0, 6.0]])


def test_global_seed_makes_default_init_reproducible():
    tinymbv2.manual_seed(3)
    a = nn.Conv2d(4, 8, 3).weight.data.copy()
    tinymbv2.manual_seed(3)
    b = nn.Conv2d(4, 8, 3).weight.data.copy()
    c = nn.Conv2d(4, 8, 3).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_module_list_holds_modules_by_index_and_has_no_forward():
    heads = nn.ModuleList(nn.Linear(3, 2), nn.Linear(4, 2))
    assert len(heads) == 2 and heads[1].in_features == 4
    assert [n for n, _ in heads.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError, match=r"ModuleList has no forward: call its modules"):
        heads(Tensor(np.zeros((1, 3))))
