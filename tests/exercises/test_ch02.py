"""Chapter 2's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2.exercises import check_conv_output_size, check_depthwise_weight_grad, check_im2col


def test_conv_output_size_hints():
    assert check_conv_output_size(lambda h, k, s, p: (h + 2 * p - k) // s + 1).message == "correct (9 cases)"
    no_padding = check_conv_output_size(lambda h, k, s, p: (h - k) // s + 1)
    assert no_padding.message == ("not yet: h=7, k=3, s=1, p=1: you gave 5, expected 7; the padding is "
                                  "missing: the padded input has h + 2p rows")
    one_side = check_conv_output_size(lambda h, k, s, p: (h + p - k) // s + 1)
    assert "the padding is on both sides: h + 2p, not h + p" in one_side.message
    no_plus_one = check_conv_output_size(lambda h, k, s, p: (h + 2 * p - k) // s)
    assert "count the first window too" in no_plus_one.message
    true_division = check_conv_output_size(lambda h, k, s, p: (h + 2 * p - k) / s + 1)
    assert "a float; a size is an int (use floor division //)" in true_division.message
    ceiling = check_conv_output_size(lambda h, k, s, p: -(-(h + 2 * p - k) // s) + 1)
    assert ceiling.message == ("not yet: h=224, k=3, s=2, p=1: you gave 113, expected 112; round down: "
                               "a window that would run past the padded input is not computed")


def im2col(x, k, s, p):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    cols = np.empty((n, c, k, k, ho, wo))
    for a in range(k):
        for b in range(k):
            cols[:, :, a, b] = xp[:, :, a:a + s * ho:s, b:b + s * wo:s]
    return cols.reshape(n, c * k * k, ho * wo)


def test_im2col_hints():
    assert check_im2col(im2col).message == "correct (5 cases)"

    def taps_first(x, k, s, p):
        n, c = x.shape[:2]
        return im2col(x, k, s, p).reshape(n, c, k * k, -1).transpose(0, 2, 1, 3).reshape(n, c * k * k, -1)

    assert "your rows run over the taps first, then the channels" in check_im2col(taps_first).message
    unpadded = check_im2col(lambda x, k, s, p: im2col(x, k, s, 0))
    assert unpadded.message == ("not yet: x (2, 3, 5, 5), k=3, s=1, p=1: shape (2, 27, 9), expected (2, 27, 25); "
                                "axis 2 holds one column per output pixel: Ho*Wo = 5*5 = 25 (did you pad x by p?)")

    def column_major(x, k, s, p):
        n, c, h, w = x.shape
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return im2col(x, k, s, p).reshape(n, -1, ho, wo).transpose(0, 1, 3, 2).reshape(n, c * k * k, -1)

    assert "number output pixel (i, j) as i*Wo + j" in check_im2col(column_major).message
    per_channel = check_im2col(lambda x, k, s, p: im2col(x, k, s, p)[:, :k * k])
    assert "axis 1 holds one row per (channel, tap): C*k*k = 27" in per_channel.message


def weight_grad(x, gy, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = gy.shape[2:]
    gw = np.zeros((x.shape[1], 1, k, k))
    for a in range(k):
        for b in range(k):
            gw[:, 0, a, b] = (gy * xp[:, :, a:a + s * ho:s, b:b + s * wo:s]).sum(axis=(0, 2, 3))
    return gw


def test_depthwise_weight_grad_hints():
    assert check_depthwise_weight_grad(weight_grad).message == "correct (4 cases)"
    unpadded = check_depthwise_weight_grad(lambda x, gy, k, s, p: weight_grad(x, gy, k, s, 0))
    assert "(the first case with padding: pad x by p before taking windows)" in unpadded.message
    stride_ignored = check_depthwise_weight_grad(lambda x, gy, k, s, p: weight_grad(x[:, :, ::s, ::s], gy, k, 1, p))
    assert "(the first case with stride 2: output pixel (i, j) reads from row i*s + a" in stride_ignored.message

    def per_image(x, gy, k, s, p):
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        ho, wo = gy.shape[2:]
        gw = np.zeros((x.shape[0], x.shape[1], k, k))
        for a in range(k):
            for b in range(k):
                gw[:, :, a, b] = (gy * xp[:, :, a:a + s * ho:s, b:b + s * wo:s]).sum(axis=(2, 3))
        return gw

    assert "one gradient per image; the weights are shared by every image, so sum over the batch" in \
        check_depthwise_weight_grad(per_image).message
    squeezed = check_depthwise_weight_grad(lambda x, gy, k, s, p: weight_grad(x, gy, k, s, p)[:, 0])
    assert "keep the weight's axis of size 1" in squeezed.message
