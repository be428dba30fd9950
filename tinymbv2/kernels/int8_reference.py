r"""Int8 inference kernels in plain NumPy, written to be read: ONNX's ``QLinearConv`` and ``QGemm``.

A quantized tensor is an integer array $q$ with a scale $s$ and a zero point $z$ standing
for the real numbers $r = s\,(q - z)$. A convolution of quantized tensors is then

$$y_r = \sum x_r w_r + b_r
      = s_x s_w \Big(\underbrace{\sum (q_x - z_x)\, q_w + q_b}_{\text{acc, int32}}\Big)$$

with the weights symmetric per output channel ($z_w = 0$, one $s_w$ per channel) and the
bias stored in int32 at the scale $s_x s_w$. Everything inside the brackets is integer
arithmetic, exact in int32 (as ONNX and onnxruntime accumulate; it wraps on overflow, which
no int8 layer of MobileNetV2 comes near). Only the last step, **requantization**, touches
floats:

$$q_y = \operatorname{saturate}\big(\operatorname{round}(\mathrm{acc} \cdot m) + z_y\big),
\qquad m = s_x s_w / s_y .$$

It is written here exactly as onnxruntime's CPU kernels (MLAS,
``MlasRequantizeOutput``) compute it, operation by operation in float32, so that both agree
on every value (the tests run onnxruntime):

1. ``m = float32(float32(s_x * s_w) / s_y)`` (per output channel);
2. ``f = float32(acc) * m``, one float32 product (an accumulator beyond $2^{24}$ is rounded to
   float32 first, as MLAS's ``cvtdq2ps`` does);
3. ``f`` clamped to ``[q_min - z_y, q_max - z_y]`` (the output type's range, narrowed to
   ReLU6's for a fused ReLU6), then rounded half to even (MLAS adds and subtracts
   $1.5 \cdot 2^{23}$, which is round-half-to-even in the default rounding mode; ``np.rint``
   is the same), then ``+ z_y``.

The fused ReLU6 is a clamp of the integer output: ReLU6 on $r_y = s_y (q_y - z_y)$ keeps
$0 \le r_y \le 6$, i.e. $z_y \le q_y \le \operatorname{round}(6 / s_y) + z_y$, intersected with
the type's range.

Why a module of its own and not a section of ``reference.py``: the int8 kernels share
nothing with the float ones but the convolution's geometry (``taps.tap_window`` and
``checks.conv_geometry``), they have their own argument checks (integer dtypes, scales and
zero points), and ``reference.py`` is already the float set's long read; one idea per file.
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] exposes these functions as
its methods ``qlinear_conv2d``, ``qgemm`` and ``requantize`` (so every kernel set has them,
and ``NumbaKernels`` overrides the first two).

Shapes are NCHW; activations int8 or uint8 (per tensor), weights int8 (per output channel),
bias int32. ``stride``, ``padding``, ``dilation``: ints or pairs, as the float kernels take.
"""
from __future__ import annotations

import numpy as np

from .checks import conv_geometry, dilation_pair, ndim
from .taps import tap_window

ACTIVATION_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


# ------------------------------------------------------------------ argument checks
def _scale(fn, name, value, size=None):
    """A positive finite float32 scale: a scalar, or a (size,) vector (a scalar broadcast)."""
    s = np.asarray(value, dtype=np.float32)
    if size is not None and s.ndim == 1 and s.shape[0] == 1:
        s = np.broadcast_to(s, (size,))
    if size is not None and s.ndim == 0:
        s = np.broadcast_to(s, (size,))
    want = "a scalar" if size is None else f"a scalar or a ({size},) vector"
    if (size is None and s.size != 1) or (size is not None and s.shape != (size,)):
        raise ValueError(f"{fn}: {name} must be {want}, got shape {np.shape(value)}")
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"{fn}: {name} must be positive and finite, got {value!r}")
    return s.reshape(()) if size is None else np.ascontiguousarray(s)


def _zero_point(fn, name, value, dtype):
    """A scalar zero point of ``dtype`` (an array of one element is taken), as an int."""
    z = np.asarray(value)
    if z.size != 1:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {z.shape}")
    if dtype is not None and z.dtype != dtype:
        raise TypeError(f"{fn}: {name} must be {dtype} like its tensor, got {z.dtype}")
    return int(z.reshape(()))


def _activation(fn, name, a):
    a = np.asarray(a)
    if a.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: {name} must be int8 or uint8, got {a.dtype}")
    return a


def _weights(fn, w, w_zero_point, co):
    """Check int8 weights and a zero point that is 0 (symmetric), scalar or per channel."""
    if w.dtype != np.int8:
        raise TypeError(f"{fn}: the weights must be int8, got {w.dtype}")
    zp = np.asarray(w_zero_point)
    if zp.dtype != np.int8 or zp.size not in (1, co) or np.any(zp != 0):
        raise ValueError(f"{fn}: w_zero_point must be int8 zeros (symmetric weights), scalar or "
                         f"({co},), got {zp.dtype} {zp.shape} {zp.ravel()[:4]}")


def _bias(fn, bias_q, co):
    """The int32 (co,) bias, or zeros for None."""
    if bias_q is None:
        return np.zeros(co, np.int32)
    b = np.asarray(bias_q)
    if b.dtype != np.int32 or b.shape != (co,):
        raise TypeError(f"{fn}: bias_q must be int32 of shape ({co},), got {b.dtype} {b.shape}")
    return b


def output_range(y_dtype, y_zero_point, y_scale, relu6):
    """``(q_min, q_max)``: the integers the output may take.

    Args:
        y_dtype: int8 or uint8.
        y_zero_point: The output's zero point (an int).
        y_scale: The output's scale.
        relu6: Clamp to ReLU6's range too: ``[z_y, round(6 / s_y) + z_y]``, rounded half to
            even in float64.

    Returns:
        Two ints.
    """
    info = np.iinfo(y_dtype)
    lo, hi = int(info.min), int(info.max)
    if relu6:
        lo = max(lo, y_zero_point)
        hi = min(hi, int(np.rint(6.0 / float(y_scale))) + y_zero_point)
    return lo, hi


def multiplier(x_scale, w_scale, y_scale):
    """``m = float32(float32(s_x * s_w) / s_y)``, per output channel, as onnxruntime computes it.

    Args:
        x_scale: float32 scalar.
        w_scale: float32 (Co,).
        y_scale: float32 scalar.

    Returns:
        float32 (Co,).
    """
    return (np.float32(x_scale) * w_scale.astype(np.float32)) / np.float32(y_scale)


# ------------------------------------------------------------------ requantization
def requantize(acc, m, y_zero_point, q_min, q_max, y_dtype):
    """int32 accumulators -> int8/uint8 outputs, MLAS's float steps in MLAS's order.

    ``q = rint(clip(float32(acc) * m, q_min - z, q_max - z)) + z``, all in float32,
    round half to even.

    Args:
        acc: int32 (N, Co, ...) (channel axis 1) or (M, Co) accumulators, bias included.
        m: float32 (Co,) multipliers (``multiplier``).
        y_zero_point: int.
        q_min: The smallest output (``output_range``).
        q_max: The largest output.
        y_dtype: int8 or uint8.

    Returns:
        ``y_dtype``, acc's shape.
    """
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    f = acc.astype(np.float32) * m.reshape(shape)
    f = np.minimum(np.maximum(f, np.float32(q_min - y_zero_point)), np.float32(q_max - y_zero_point))
    return (np.rint(f).astype(np.int32) + y_zero_point).astype(y_dtype)


# ------------------------------------------------------------------ QLinearConv
def qlinear_conv2d_args(fn, xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q, y_scale,
                        y_zero_point, stride, padding, groups, dilation):
    """Check a quantized convolution's arguments; shared by the kernel sets.

    Args:
        fn: The kernel's name, for the messages.
        xq: (N, C, H, W) int8 or uint8.
        x_scale: Scalar.
        x_zero_point: Scalar of xq's dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) or a scalar.
        w_zero_point: int8 zeros.
        bias_q: (Co,) int32 or None.
        y_scale: Scalar.
        y_zero_point: Scalar, int8 or uint8.
        stride: An int or a pair.
        padding: An int or a pair.
        groups: A divisor of C and Co.
        dilation: An int or a pair.

    Returns:
        ``(xq, wq, bias (Co,) int32, x_zp, y_zp, m (Co,) float32, y_dtype, stride, padding,
        dilation, (Ho, Wo))``.

    Raises:
        TypeError: A dtype other than the ones below.
        ValueError: Shapes that do not fit, a weight zero point other than 0, a scale that is
            not positive.
    """
    xq = _activation(fn, "xq", xq)
    wq = np.asarray(wq)
    ndim(fn, "xq", xq, 4)
    ndim(fn, "wq", wq, 4)
    n, c, h, w = xq.shape
    co, cg, kh, kw = wq.shape
    if not isinstance(groups, (int, np.integer)) or groups < 1 or c % groups or co % groups:
        raise ValueError(f"{fn}: groups must divide the input channels {c} and the output "
                         f"channels {co}, got {groups!r}")
    if cg * groups != c:
        raise ValueError(f"{fn}: weights of shape {wq.shape} with groups={groups} expect "
                         f"{cg * groups} input channels, got xq of shape {xq.shape}")
    _weights(fn, wq, w_zero_point, co)
    y_zp_arr = np.asarray(y_zero_point)
    if y_zp_arr.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: y_zero_point must be int8 or uint8 (the output's type), got "
                        f"{y_zp_arr.dtype}")
    x_zp = _zero_point(fn, "x_zero_point", x_zero_point, xq.dtype)
    y_zp = _zero_point(fn, "y_zero_point", y_zero_point, None)
    xs, ws, ys = _scale(fn, "x_scale", x_scale), _scale(fn, "w_scale", w_scale, co), \
        _scale(fn, "y_scale", y_scale)
    bias = _bias(fn, bias_q, co)
    dilation = dilation_pair(fn, dilation)
    stride, padding, (ho, wo) = conv_geometry(fn, (n, cg, h, w), (co, cg, kh, kw), stride, padding,
                                              dilation=dilation)
    return (xq, wq, bias, x_zp, y_zp, multiplier(xs, ws, ys), y_zp_arr.dtype, ys, stride, padding,
            dilation, (ho, wo))


def qlinear_conv2d(xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q, y_scale,
                   y_zero_point, stride, padding, groups, dilation=(1, 1), relu6=False):
    r"""ONNX ``QLinearConv``: a convolution of int8/uint8 activations with int8 weights.

    $\mathrm{acc}[n, o] = q_b[o] + \sum_{c \in g(o)} \sum_{i, j}
    (q_x[n, c, o_h s_h + i d_h - p_h, o_w s_w + j d_w - p_w] - z_x)\, q_w[o, c, i, j]$ in int32,
    the padding standing for the real 0 (so $q_x - z_x = 0$ there), then ``requantize``.
    Dense (``groups=1``, the stem), depthwise (``groups=C``, 3x3) and pointwise (1x1) are
    all this one loop over the taps.

    Args:
        xq: (N, C, H, W) int8 or uint8.
        x_scale: Scalar (float32).
        x_zero_point: Scalar of xq's dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) float32, or a scalar for per-tensor weights.
        w_zero_point: 0, int8, scalar or (Co,) (symmetric weights only).
        bias_q: (Co,) int32 at the scale ``x_scale * w_scale``, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar, int8 or uint8: the output's dtype.
        stride: An int or a pair.
        padding: An int or a pair (zeros of the real input: ``x_zero_point`` in xq's terms).
        groups: 1, C, or any divisor of C and Co.
        dilation: An int or a pair.
        relu6: Clamp the output to ReLU6's range.

    Returns:
        (N, Co, Ho, Wo) of y_zero_point's dtype.
    """
    (xq, wq, bias, x_zp, y_zp, m, y_dtype, ys, stride, padding, dilation, (ho, wo)) = \
        qlinear_conv2d_args("qlinear_conv2d", xq, x_scale, x_zero_point, wq, w_scale,
                            w_zero_point, bias_q, y_scale, y_zero_point, stride, padding, groups,
                            dilation)
    n, c = xq.shape[:2]
    co, cg, kh, kw = wq.shape
    xc = xq.astype(np.int32) - x_zp  # centred: the padding below is the real 0
    xp = np.pad(xc, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    xp = xp.reshape(n, groups, cg, *xp.shape[2:])
    wg = wq.astype(np.int32).reshape(groups, co // groups, cg, kh, kw)
    acc = np.zeros((n, groups, co // groups, ho, wo), np.int32)
    for i in range(kh):
        for j in range(kw):
            win = tap_window(xp.reshape(n, c, *xp.shape[3:]), i, j, (ho, wo), stride, dilation)
            win = win.reshape(n, groups, cg, ho, wo)
            acc += np.einsum("gok,ngkhw->ngohw", wg[:, :, :, i, j], win, dtype=np.int32)
    acc = acc.reshape(n, co, ho, wo) + bias.reshape(1, co, 1, 1)
    q_min, q_max = output_range(y_dtype, y_zp, ys, relu6)
    return requantize(acc, m, y_zp, q_min, q_max, y_dtype)


def prepared_conv_args(fn, x_scale, x_zero_point, x_dtype, wq, w_scale, w_zero_point, bias_q,
                       y_scale, y_zero_point, stride, padding, groups, dilation):
    """Check a convolution's arguments once, for inputs of any N, H, W: ``qlinear_conv2d_args``
    on the smallest input of its C = ``wq.shape[1] * groups`` channels; ``prepared_input`` checks
    each input later.

    Args:
        fn: The kernel's name, for the messages.
        x_scale: Scalar.
        x_zero_point: Scalar of x_dtype.
        x_dtype: int8 or uint8: the inputs' dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) or a scalar.
        w_zero_point: int8 zeros.
        bias_q: (Co,) int32 or None.
        y_scale: Scalar.
        y_zero_point: Scalar, int8 or uint8.
        stride: An int or a pair.
        padding: An int or a pair.
        groups: A divisor of C and Co.
        dilation: An int or a pair.

    Returns:
        What ``qlinear_conv2d_args`` returns, the input (1, C, kh', kw') of zeros (kh' the
        dilated kernel's height).

    Raises:
        TypeError: A dtype other than the ones ``qlinear_conv2d_args`` takes.
        ValueError: As ``qlinear_conv2d_args``.
    """
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: x_dtype must be int8 or uint8, got {x_dtype}")
    wq = np.asarray(wq)
    ndim(fn, "wq", wq, 4)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    dh, dw = dilation_pair(fn, dilation)
    probe = np.zeros((1, wq.shape[1] * groups, dh * (wq.shape[2] - 1) + 1,
                      dw * (wq.shape[3] - 1) + 1), x_dtype)
    return qlinear_conv2d_args(fn, probe, x_scale, x_zero_point, wq, w_scale, w_zero_point,
                               bias_q, y_scale, y_zero_point, stride, padding, groups, dilation)


def prepared_input(fn, xq, x_dtype, c, kernel, stride, padding, dilation):
    """Check an input of a prepared convolution (its other arguments checked once, by
    ``prepared_conv_args``): an (N, C, H, W) array of x_dtype, the kernel fitting in it.

    Args:
        fn: The kernel's name, for the messages.
        xq: The input.
        x_dtype: Its dtype (np.dtype).
        c: Its channels.
        kernel: (kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).

    Returns:
        (Ho, Wo).

    Raises:
        TypeError: Not an ndarray of x_dtype.
        ValueError: Not (N, C, H, W), or smaller than the dilated kernel with its padding.
    """
    if not isinstance(xq, np.ndarray) or xq.dtype != x_dtype:
        raise TypeError(f"{fn}: xq must be a NumPy array of {x_dtype}, got "
                        f"{type(xq).__name__} {getattr(xq, 'dtype', '')}")
    if xq.ndim != 4 or xq.shape[1] != c:
        raise ValueError(f"{fn}: xq must be (N, {c}, H, W), got {xq.shape}")
    ho = (xq.shape[2] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (xq.shape[3] + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{fn}: xq {xq.shape} with padding {padding} is smaller than the "
                         f"kernel {kernel} (dilation {dilation})")
    return ho, wo


def prepared_residual(fn, residual, y_dtype):
    """Check a prepared convolution's residual sum once: its QLinearAdd's quantizations.

    Args:
        fn: The kernel's name, for the messages.
        residual: None, or ``(a_scale, a_zero_point, sum_scale, sum_zero_point)``: the
            residual's and the sum's.
        y_dtype: The convolution's output dtype (QLinearAdd takes uint8).

    Returns:
        None, or the four checked: scales float32, zero points uint8.

    Raises:
        TypeError: A zero point or the output not uint8.
        ValueError: Not four values, a scale that is not a positive finite scalar.
    """
    if residual is None:
        return None
    if len(residual) != 4:
        raise ValueError(f"{fn}: residual must be (a_scale, a_zero_point, sum_scale, "
                         f"sum_zero_point), got {len(residual)} values")
    sa, za, sy, zy = residual
    probe = np.zeros(1, np.uint8)
    checked = qlinear_add_args(fn, probe, sa, za, np.zeros(1, y_dtype), 1.0, y_dtype.type(0),
                               sy, zy)
    return checked[1], np.uint8(checked[2]), checked[6], np.uint8(checked[7])


def prepare_qlinear_conv2d(x_scale, x_zero_point, x_dtype, wq, w_scale, w_zero_point, bias_q,
                           y_scale, y_zero_point, stride, padding, groups, dilation=(1, 1),
                           relu6=False, residual=None):
    """``qlinear_conv2d`` with everything but the input given once: ``conv(xq)``, or with a
    residual sum ``conv(xq, aq)`` = ``qlinear_add`` of aq and the convolution's output.

    The reference checks its arguments here (``prepared_conv_args``), and on each call the
    input (``prepared_input``), then runs ``qlinear_conv2d`` itself; a fast set prepares the weights here instead.

    Args:
        x_scale: Scalar (float32).
        x_zero_point: Scalar of x_dtype.
        x_dtype: int8 or uint8: the inputs' dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) float32, or a scalar.
        w_zero_point: 0 (symmetric weights).
        bias_q: (Co,) int32, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar, int8 or uint8: the output's dtype.
        stride: An int or a pair.
        padding: An int or a pair.
        groups: 1, C, or any divisor of C and Co.
        dilation: An int or a pair.
        relu6: Clamp the output to ReLU6's range.
        residual: None, or ``(a_scale, a_zero_point, sum_scale, sum_zero_point)``: the
            output is then QLinearAdd's sum of a residual aq (uint8) and the convolution's
            (uint8) output, at the sum's scale and zero point.

    Returns:
        ``conv(xq)`` (``conv(xq, aq)`` with a residual): xq (N, C, H, W) of x_dtype to
        (N, Co, Ho, Wo), the integers of ``qlinear_conv2d`` (and ``qlinear_add``).
    """
    fn = "prepare_qlinear_conv2d"
    checked = prepared_conv_args(fn, x_scale, x_zero_point, x_dtype, wq, w_scale, w_zero_point,
                                 bias_q, y_scale, y_zero_point, stride, padding, groups, dilation)
    add = prepared_residual(fn, residual, checked[6])
    x_dtype, c, kernel = np.dtype(x_dtype), checked[0].shape[1], checked[1].shape[2:]
    pairs = checked[8:11]  # stride, padding, dilation

    def conv(xq, aq=None):
        if add is None and aq is not None:
            raise ValueError(f"{fn}: an aq (residual) given to a convolution prepared without "
                             f"residual=")
        prepared_input(fn, xq, x_dtype, c, kernel, *pairs)
        y = qlinear_conv2d(xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q,
                           y_scale, y_zero_point, stride, padding, groups, dilation, relu6)
        if add is None:
            return y
        sa, za, sy, zy = add
        return qlinear_add(aq, sa, za, y, y_scale, y_zero_point, sy, zy)
    return conv


# ------------------------------------------------------------------ QGemm (the Linear)
def qgemm_args(fn, aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, bias_q, y_scale,
               y_zero_point):
    """Check a quantized Linear's arguments; shared by the kernel sets.

    Args:
        fn: The kernel's name, for the messages.
        aq: (M, K) int8 or uint8.
        a_scale: Scalar.
        a_zero_point: Scalar of aq's dtype.
        bq: (N, K) int8.
        b_scale: (N,) or a scalar.
        b_zero_point: int8 zeros.
        bias_q: (N,) int32 or None.
        y_scale: Scalar.
        y_zero_point: Scalar, int8 or uint8.

    Returns:
        ``(aq, bq, bias (N,) int32, a_zp, y_zp, m (N,) float32, y_dtype, y_scale)``.
    """
    aq = _activation(fn, "aq", aq)
    bq = np.asarray(bq)
    ndim(fn, "aq", aq, 2)
    ndim(fn, "bq", bq, 2)
    if aq.shape[1] != bq.shape[1]:
        raise ValueError(f"{fn}: aq (M, K) and bq (N, K) must share K, got {aq.shape} and "
                         f"{bq.shape}")
    co = bq.shape[0]
    _weights(fn, bq, b_zero_point, co)
    y_zp_arr = np.asarray(y_zero_point)
    if y_zp_arr.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: y_zero_point must be int8 or uint8 (the output's type), got "
                        f"{y_zp_arr.dtype}")
    a_zp = _zero_point(fn, "a_zero_point", a_zero_point, aq.dtype)
    y_zp = _zero_point(fn, "y_zero_point", y_zero_point, None)
    xs, ws, ys = _scale(fn, "a_scale", a_scale), _scale(fn, "b_scale", b_scale, co), \
        _scale(fn, "y_scale", y_scale)
    return aq, bq, _bias(fn, bias_q, co), a_zp, y_zp, multiplier(xs, ws, ys), y_zp_arr.dtype, ys


def qgemm(aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, bias_q, y_scale, y_zero_point,
          relu6=False):
    r"""The Linear layer in int8: ``com.microsoft.QGemm`` with ``transB=1``, ``alpha=1``.

    $\mathrm{acc}[m, o] = q_c[o] + \sum_k (q_a[m, k] - z_a)\, q_b[o, k]$ in int32, then
    ``requantize`` with $m_o = s_a s_b[o] / s_y$. ONNX's own ``QLinearMatMul`` has no bias;
    onnxruntime's ``QGemm`` (domain ``com.microsoft``) is its Gemm with an int32 bias and
    per-column weight scales, what a quantized Linear exports to, so that is the one matched.

    Args:
        aq: (M, K) int8 or uint8.
        a_scale: Scalar (float32).
        a_zero_point: Scalar of aq's dtype.
        bq: (N, K) int8: the Linear's weight as stored, out x in.
        b_scale: (N,) float32 or a scalar.
        b_zero_point: 0 (int8, scalar or (N,)).
        bias_q: (N,) int32 at the scale ``a_scale * b_scale``, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar; its dtype (int8 or uint8) is the output's.
        relu6: Clamp the output to ReLU6's range.

    Returns:
        (M, N) of y_zero_point's dtype.
    """
    aq, bq, bias, a_zp, y_zp, m, y_dtype, ys = qgemm_args(
        "qgemm", aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, bias_q, y_scale,
        y_zero_point)
    acc = (aq.astype(np.int32) - a_zp) @ bq.astype(np.int32).T + bias
    q_min, q_max = output_range(y_dtype, y_zp, ys, relu6)
    return requantize(acc.astype(np.int32), m, y_zp, q_min, q_max, y_dtype)


# ------------------------------------------------------------------ quantize, QLinearAdd
def quantize_uint8_args(fn, x, scale, zero_point):
    """Check ``quantize_uint8``'s arguments; shared by the kernel sets.

    Args:
        fn: The kernel's name, for the messages.
        x: Float32 array.
        scale: Positive scalar.
        zero_point: uint8 scalar.

    Returns:
        ``(x, scale float32 0-d, zero_point int)``.

    Raises:
        TypeError: x not float32, a zero point not uint8.
        ValueError: A scale that is not a positive finite scalar.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"{fn}: x must be float32, got {x.dtype}")
    return x, _scale(fn, "scale", scale), _zero_point(fn, "zero_point", zero_point,
                                                      np.dtype(np.uint8))


def qlinear_add_args(fn, aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, y_scale,
                     y_zero_point):
    """Check ``qlinear_add``'s arguments; shared by the kernel sets.

    Args:
        fn: The kernel's name, for the messages.
        aq: uint8 array.
        a_scale: Its scale.
        a_zero_point: Its zero point (uint8).
        bq: uint8 array of aq's shape.
        b_scale: Its scale.
        b_zero_point: Its zero point (uint8).
        y_scale: The sum's scale.
        y_zero_point: The sum's zero point (uint8).

    Returns:
        ``(aq, a_scale, a_zp, bq, b_scale, b_zp, y_scale, y_zp)``: the scales float32 0-d,
        the zero points ints.

    Raises:
        TypeError: A tensor or zero point not uint8.
        ValueError: Shapes that differ, a scale that is not a positive finite scalar.
    """
    u8 = np.dtype(np.uint8)
    aq, bq = np.asarray(aq), np.asarray(bq)
    for name, q in (("aq", aq), ("bq", bq)):
        if q.dtype != u8:
            raise TypeError(f"{fn}: {name} must be uint8, got {q.dtype}")
    if aq.shape != bq.shape:
        raise ValueError(f"{fn}: aq and bq must have one shape, got {aq.shape} and {bq.shape}")
    return (aq, _scale(fn, "a_scale", a_scale), _zero_point(fn, "a_zero_point", a_zero_point, u8),
            bq, _scale(fn, "b_scale", b_scale), _zero_point(fn, "b_zero_point", b_zero_point, u8),
            _scale(fn, "y_scale", y_scale), _zero_point(fn, "y_zero_point", y_zero_point, u8))


def _to_uint8(x, scale, zero_point):
    """The float32 steps of ``quantize_uint8``, on checked arguments."""
    inv = np.float32(1.0) / scale
    return np.clip(np.rint(x * inv) + np.float32(zero_point), 0, 255).astype(np.uint8)


def quantize_uint8(x, scale, zero_point):
    r"""Float32 x to uint8 with one scale: $q = \text{clip}(\text{round}(x \cdot (1/s)) + z, 0, 255)$.

    The float32 steps of the quantized view's ``ActQuant`` (``fake_quant.quantize_array``):
    ``inv = float32(1) / s``; ``rint(x * inv)`` (half to even); ``+ float32(z)``; clip.
    (ONNX's ``QuantizeLinear`` divides by $s$: a tie can round the other way, which is why
    onnxruntime's and the view's classes agree on most, not all, images.)

    Args:
        x: Float32 array, any shape.
        scale: Positive scalar (float32).
        zero_point: Scalar, 0 to 255.

    Returns:
        uint8 array of x's shape.
    """
    return _to_uint8(*quantize_uint8_args("quantize_uint8", x, scale, zero_point))


def qlinear_add(aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, y_scale, y_zero_point):
    r"""ONNX ``QLinearAdd`` on uint8 tensors: $q_y = Q(D(a) + D(b))$ in float32.

    $D(q) = (\text{float32}(q) - z) \cdot s$ for each input, their float32 sum, then
    ``quantize_uint8`` with the sum's scale and zero point: the float32 operations of the
    quantized view's residual sum, in its order.

    Args:
        aq: uint8 array.
        a_scale: Its scale.
        a_zero_point: Its zero point (uint8).
        bq: uint8 array of aq's shape.
        b_scale: Its scale.
        b_zero_point: Its zero point (uint8).
        y_scale: The sum's scale.
        y_zero_point: The sum's zero point (uint8).

    Returns:
        The sum, uint8, aq's shape.
    """
    aq, sa, za, bq, sb, zb, sy, zy = qlinear_add_args(
        "qlinear_add", aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, y_scale,
        y_zero_point)
    total = (aq.astype(np.float32) - np.float32(za)) * sa
    total = total + (bq.astype(np.float32) - np.float32(zb)) * sb
    return _to_uint8(total, sy, zy)


# ------------------------------------------------------------------ the pooled features
def dequantize_global_average_pool_args(fn, q, scale, zero_point):
    """Check ``dequantize_global_average_pool``'s arguments; shared by the kernel sets.

    Args:
        fn: The kernel's name, for the messages.
        q: (N, C, H, W) uint8, planes not empty.
        scale: Positive scalar.
        zero_point: uint8 scalar.

    Returns:
        ``(q, scale float32 0-d, zero_point int)``.

    Raises:
        TypeError: q or the zero point not uint8.
        ValueError: q not 4-d or its planes empty, a scale that is not a positive finite scalar.
    """
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise TypeError(f"{fn}: q must be uint8, got {q.dtype}")
    if q.ndim != 4 or q.shape[2] * q.shape[3] == 0:
        raise ValueError(f"{fn}: q must be (N, C, H, W) with H * W > 0, got shape {q.shape}")
    return q, _scale(fn, "scale", scale), _zero_point(fn, "zero_point", zero_point,
                                                      np.dtype(np.uint8))


def dequantize_global_average_pool(q, scale, zero_point):
    r"""The mean of each dequantized plane: the QDQ graph's DequantizeLinear, then GlobalAveragePool.

    $$\text{out}_{nc} = \frac{s}{HW} \Big(\sum_{h,w} q_{nchw} - HW z\Big)$$

    The sum of the integers is exact (int64); the rest in float64: the product by $s$ is exact
    (a float32 has 24 bits, the sum below $2^{29}$ while $HW < 2^{21}$), the division by $HW$
    is one rounding, then one rounding to float32. So the result is the exact mean rounded to
    float32, but for a double rounding (one unit in the last place, on a float32 tie only).
    Not NumPy's float32 ``mean`` of a float32 copy: no temporary, and no float32 sum's
    rounding.

    Args:
        q: (N, C, H, W) uint8, any memory layout.
        scale: Positive scalar (float32).
        zero_point: Scalar (uint8).

    Returns:
        (N, C) float32.
    """
    q, s, z = dequantize_global_average_pool_args("dequantize_global_average_pool", q, scale,
                                                  zero_point)
    n, c, h, w = q.shape
    total = q.reshape(n, c, h * w).sum(axis=2, dtype=np.int64) - np.int64(h * w * z)
    return (total.astype(np.float64) * np.float64(s) / np.float64(h * w)).astype(np.float32)
