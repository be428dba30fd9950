"""Chapter 13's checks answer common wrong answers with the hint meant for them."""
from tinymbv2.exercises import check_block_macs, check_head_fraction, check_make_divisible
from tinymbv2.models import mobilenet_v2


def _right_make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def test_make_divisible_hints():
    assert check_make_divisible(_right_make_divisible).message == "correct (50 cases)"
    no_ten_percent = check_make_divisible(lambda v, d=8: max(d, int(v + d / 2) // d * d))
    assert "drops more than 10% of 11.2 channels, so add one divisor" in no_ten_percent.message

    def python_round(v, d=8):
        new_v = max(d, round(v / d) * d)
        return new_v + d if new_v < 0.9 * v else new_v
    halves = check_make_divisible(python_round)
    assert "make_divisible(52, divisor=8): you gave 48, expected 56" in halves.message
    assert "round halves up" in halves.message

    def ceiling(v, d=8):
        return max(d, -(-int(v) // d) * d)
    assert "round to the nearest multiple, not up" in check_make_divisible(ceiling).message


def _right_block_macs(c_in, c_out, t, stride, h, w):
    hidden = round(c_in * t)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return (h * w * c_in * hidden if t != 1 else 0) + ho * wo * hidden * (9 + c_out)


def test_block_macs_hints():
    assert check_block_macs(_right_block_macs).passed

    def always_expand(c_in, c_out, t, stride, h, w):
        hidden = round(c_in * t)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        return h * w * c_in * hidden + ho * wo * hidden * (9 + c_out)
    assert "with t = 1 the block has no expansion layer" in check_block_macs(always_expand).message

    def no_stride(c_in, c_out, t, stride, h, w):
        hidden = round(c_in * t)
        return (h * w * c_in * hidden if t != 1 else 0) + h * w * hidden * (9 + c_out)
    message = check_block_macs(no_stride).message
    assert "stride 2, so it and the projection run on the 8x8 output, not the 16x16 input" in message

    def floor_size(c_in, c_out, t, stride, h, w):
        hidden = round(c_in * t)
        return (h * w * c_in * hidden if t != 1 else 0) + (h // stride) * (w // stride) * hidden * (9 + c_out)
    assert "(h - 1) // 2 + 1 = 4 rows, not h // 2 = 3" in check_block_macs(floor_size).message

    def dense_depthwise(c_in, c_out, t, stride, h, w):
        hidden = round(c_in * t)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        return (h * w * c_in * hidden if t != 1 else 0) + ho * wo * hidden * (9 * hidden + c_out)
    assert "9 multiply-adds per output value, not 9 * hidden" in check_block_macs(dense_depthwise).message


def test_head_fraction_hints():
    def count(module):
        return sum(int(p.size) for p in module.parameters())

    def right(w, k):
        m = mobilenet_v2(width_mult=w, num_classes=k)
        return (count(m.features[18]) + count(m.classifier)) / count(m)
    assert check_head_fraction(right).message == "correct (6 cases)"

    def weights_only(w, k):
        m = mobilenet_v2(width_mult=w, num_classes=k)
        return (count(m.features[18]) + m.classifier[1].weight.size) / count(m)
    assert "1000 parameters short: the classifier's bias" in check_head_fraction(weights_only).message

    def conv_only(w, k):
        m = mobilenet_v2(width_mult=w, num_classes=k)
        return (m.features[18][0].weight.size + count(m.classifier)) / count(m)
    assert "2560 parameters short: the head's BatchNorm" in check_head_fraction(conv_only).message

    def not_a_fraction(w, k):
        m = mobilenet_v2(width_mult=w, num_classes=k)
        return count(m.features[18]) + count(m.classifier)
    assert "expected a fraction of the whole" in check_head_fraction(not_a_fraction).message
