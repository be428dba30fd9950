"""summary(): analytic shapes, parameters and multiply-adds against REFERENCE.md."""
import numpy as np
import pytest

from tinymbv2 import nn
from tinymbv2.models import mobilenet_v2, summary

# REFERENCE.md: multiply-adds in millions by width (rows) and resolution (columns)
RESOLUTIONS = (224, 192, 160, 128, 96)
MACS_GRID = {
    1.4: (582.2, 428.2, 297.9, 191.3, 108.4),
    1.0: (300.8, 221.3, 154.1, 99.1, 56.3),
    0.75: (209.1, 153.9, 107.3, 69.1, 39.4),
    0.5: (97.1, 71.7, 50.2, 32.6, 18.9),
    0.35: (59.3, 43.9, 30.9, 20.2, 11.9),
}
PARAMS = {1.4: 6_108_776, 1.0: 3_504_872, 0.75: 2_636_424, 0.5: 1_968_680, 0.35: 1_677_128}


@pytest.fixture(scope="module")
def full():
    return summary(mobilenet_v2(seed=0))


@pytest.mark.parametrize("width", sorted(MACS_GRID))
def test_macs_grid_and_params_match_reference(width):
    model = mobilenet_v2(width_mult=width, seed=0)
    for res, expected in zip(RESOLUTIONS, MACS_GRID[width]):
        s = summary(model, (3, res, res))
        assert round(s.total_macs / 1e6, 1) == expected, (width, res)
        assert s.total_params == PARAMS[width]


def test_width_one_at_224_exact_totals_and_split(full):
    assert full.total_macs == 300_774_272 and full.total_params == 3_504_872
    split = {k: round(v / 1e6, 1) for k, v in full.macs_by_kind.items()}
    assert split == {"pointwise": 267.9, "depthwise": 20.7, "standard": 10.8, "linear": 1.3}
    assert full.macs_by_kind["linear"] == 1_280_000  # 1280 x 1000
    assert full.macs_by_kind["standard"] == 112 * 112 * 32 * 27  # the 3x3 stem
    assert sum(full.macs_by_kind.values()) == full.total_macs
    assert sum(r.params for r in full.rows) == full.total_params


def test_rows_follow_the_module_tree(full):
    names = [r.name for r in full.rows]
    assert names[:3] == ["features.0.0", "features.0.1", "features.0.2"]
    assert names[-4:] == ["pool", "flatten", "classifier.0", "classifier.1"]
    first = full.rows[0]
    assert (first.type, first.output_shape, first.params, first.macs) == (
        "Conv2d", (1, 32, 112, 112), 864, 10_838_016)
    assert first.activation_bytes == 32 * 112 * 112 * 4 and first.macs_kind == "standard"
    by_name = {r.name: r for r in full.rows}
    assert by_name["features.18.0"].output_shape == (1, 1280, 7, 7)
    assert by_name["features.17.conv.3"].output_shape == (1, 320, 7, 7)
    dw = by_name["features.2.conv.1.0"]
    assert dw.output_shape == (1, 96, 56, 56) and dw.macs == 96 * 56 * 56 * 9
    assert dw.macs_kind == "depthwise" and dw.params == 96 * 9
    adds = [r for r in full.rows if r.type == "residual add"]
    assert len(adds) == 10 and adds[0].name == "features.3.add"
    assert full.output_shape == (1, 1000) and len(full) == len(full.rows)
    # the largest activation: block 2's expansion to 96 channels at 112 x 112
    assert full.max_activation_bytes == 96 * 112 * 112 * 4


def test_table_text(full):
    text = str(full)
    lines = text.splitlines()
    assert lines[0] == "MobileNetV2, input 1x3x224x224"
    assert any(line.startswith("features.0.0") and "10,838,016" in line for line in lines)
    assert "total parameters:    3,504,872" in text
    assert "total multiply-adds: 300,774,272 (300.8M: pointwise 267.9M" in text
    assert repr(full) == "Summary(MobileNetV2, input (1, 3, 224, 224), params=3,504,872, macs=300,774,272)"


def test_batch_dtype_and_variants_scale_as_expected():
    model = mobilenet_v2(0.5, 10, seed=0)
    one = summary(model, (3, 96, 96))
    four = summary(model, (3, 96, 96), batch_size=4)
    assert four.total_macs == 4 * one.total_macs
    assert four.total_activation_bytes == 4 * one.total_activation_bytes
    double = summary(model.double(), (3, 96, 96))
    assert double.total_activation_bytes == 2 * one.total_activation_bytes
    small = summary(mobilenet_v2(1.0, 10, small_input=True, seed=0), (3, 32, 32))
    assert small.rows[0].output_shape == (1, 32, 32, 32)
    assert [r.output_shape for r in small.rows if r.name == "features.18.0"] == [(1, 1280, 4, 4)]
    grey = summary(mobilenet_v2(1.0, 10, in_channels=1, seed=0), (1, 28, 28))
    assert grey.rows[0].params == 32 * 9 and grey.output_shape == (1, 10)


def test_summary_is_analytic_it_never_calls_forward(monkeypatch):
    model = mobilenet_v2(0.35, 10, seed=0)

    def boom(self, *args, **kwargs):
        raise AssertionError("summary ran a forward")

    monkeypatch.setattr(nn.Module, "__call__", boom)
    # 58,018,608: measured with forward hooks on torchvision's width-0.35, 10-class model
    assert summary(model, (3, 224, 224)).total_macs == 58_018_608


def test_summary_errors():
    model = mobilenet_v2(0.35, 10, seed=0)
    with pytest.raises(ValueError, match=r"'features.0.0' .*expected rank 4 with 3 channels.*got shape \(1, 1, 32, 32\)"):
        summary(model, (1, 32, 32))
    with pytest.raises(ValueError, match=r"input_size as \(C, H, W\)"):
        summary(model, (32, 32))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        summary(model, batch_size=0)

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="cannot propagate shapes through Custom"):
        summary(nn.Sequential(nn.Conv2d(3, 3, 1), Custom()), (3, 8, 8))
    np.testing.assert_equal(summary(nn.Sequential(nn.Conv2d(3, 3, 1)), (3, 8, 8)).total_macs, 8 * 8 * 9)


def test_a_dilated_conv_is_counted_on_its_own_output_size():
    """H_o = floor((H + 2p - d(k - 1) - 1) / s) + 1: 17 px, k 3, d 3, s 2, p 0 -> 6 px, and
    each output still costs k*k*Ci multiply-adds (dilation spreads the taps, it adds none)."""
    s = summary(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 0, 3)), (3, 17, 17))
    assert s.rows[0].output_shape == (1, 8, 6, 6)
    assert s.total_macs == 6 * 6 * 8 * 3 * 3 * 3
    # DeepLab's atrous 3x3 with padding = dilation keeps the plane, and the cost, of dilation 1
    same = [summary(nn.Sequential(nn.Conv2d(16, 16, 3, 1, d, d, 16)), (16, 32, 32)) for d in (1, 6)]
    assert same[0].rows[0].output_shape == same[1].rows[0].output_shape == (1, 16, 32, 32)
    assert same[0].total_macs == same[1].total_macs == 32 * 32 * 16 * 9
