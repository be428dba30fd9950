"""Chapter 5's checks answer common wrong answers with the hint meant for them."""
from tinymbv2.exercises import check_block_params, check_block_plan, check_feature_sizes
from tinymbv2.models import TABLE2, make_divisible


def plan(width_mult, *, repeats=True, repeat_stride=False, rounding=make_divisible, stem=None):
    rows, inp = [], make_divisible(32 * width_mult) if stem is None else stem
    for t, c, n, s in TABLE2:
        oup = rounding(c * width_mult)
        for i in range(n if repeats else 1):
            rows.append((inp, oup, s if i == 0 or repeat_stride else 1, t))
            inp = oup
    return rows


def test_block_plan_hints():
    assert check_block_plan(plan).message == "correct (5 cases)"
    assert "you gave 7 blocks, one per row of Table 2" in check_block_plan(
        lambda w: plan(w, repeats=False)).message
    assert "block 3 (row 2 of Table 2, repeat 2 of 2): stride 2, expected 1: only the first block" in \
        check_block_plan(lambda w: plan(w, repeat_stride=True)).message
    message = check_block_plan(lambda w: plan(w, rounding=int)).message
    assert message.startswith("not yet: width 0.5, block 2") and "make_divisible(12) = 16" in message
    assert "the first block reads the stem's make_divisible(32 * width_mult) channels" in \
        check_block_plan(lambda w: plan(w, stem=32)).message
    assert "expected a list of (inp, oup, stride, t) tuples" in check_block_plan(lambda w: 17).message


def sizes(image_size, small_input=False, *, ceil=True, all_strides=False):
    div = (lambda h, s: -(-h // s)) if ceil else (lambda h, s: h // s)
    size = div(image_size, 1 if small_input else 2)
    out = [size]
    for row, (t, c, n, s) in enumerate(TABLE2):
        s = 1 if small_input and row == 1 else s
        for i in range(n):
            size = div(size, s if i == 0 or all_strides else 1)
            out.append(size)
    return out + [size]


def test_feature_sizes_hints():
    assert check_feature_sizes(sizes).message == "correct (8 cases)"
    message = check_feature_sizes(lambda h, f: sizes(h, f, ceil=False)).message
    assert message.startswith("not yet: feature_sizes(97, small_input=False): after the stem")
    assert "gives ceil(97/2) = 49 rows, not 97 // 2" in message
    assert "with small_input the stem and the first block of row 2 have stride 1" in \
        check_feature_sizes(lambda h, f: sizes(h, False)).message
    assert "only the first block of a row has stride s" in \
        check_feature_sizes(lambda h, f: sizes(h, f, all_strides=True)).message
    assert "you gave 18 sizes, expected 19" in check_feature_sizes(lambda h, f: sizes(h, f)[:-1]).message


def params(inp, oup, t, *, bn=2, expand_always=False, dense=False, bias=0):
    hid = round(inp * t)
    expand = inp * hid + (bn + bias) * hid if t != 1 or expand_always else 0
    depthwise = (9 * hid * hid if dense else 9 * hid) + (bn + bias) * hid
    return expand + depthwise + hid * oup + (bn + bias) * oup


def test_block_params_hints():
    assert check_block_params(params).message == "correct (10 cases)"
    assert "each BatchNorm has 2 trainable parameters per channel" in check_block_params(
        lambda i, o, t: params(i, o, t, bn=0)).message
    assert "running_mean and running_var are buffers" in check_block_params(
        lambda i, o, t: params(i, o, t, bn=4)).message
    assert "the convolutions have no bias (bias=False)" in check_block_params(
        lambda i, o, t: params(i, o, t, bias=1)).message
    assert "one 3x3 filter per channel" in check_block_params(
        lambda i, o, t: params(i, o, t, dense=True)).message
    assert "with t = 1 there is no expansion conv" in check_block_params(
        lambda i, o, t: params(i, o, t, expand_always=True)).message
    assert "expected a number, got str" in check_block_params(lambda i, o, t: "many").message
