"""Kernel sets: plain array functions that do the heavy arithmetic, no autograd.

Every set (``reference``: NumPy to be read; ``numba_cpu``: fast CPU;
``cupy_gpu``: CUDA) defines the same names with the same signatures, so the
differentiable ops in :mod:`tinymbv2.functional` call whichever set
:func:`tinymbv2.backend.kernels_for` picks. Shapes are NCHW; ``stride`` and
``padding`` are ``(sh, sw)`` / ``(ph, pw)`` tuples of ints; outputs have the
dtype of the inputs (float32 or float64) and are freshly allocated,
C-contiguous arrays -- except that ``numba_cpu`` returns the activations of
small planes (outputs of the conv and BatchNorm kernels, and their input
gradients) channels-last: NCHW arrays over NHWC memory, see
:mod:`.numba_layout`. Inputs may be non-contiguous or channels-last.

Dense convolution, any kernel size, groups = 1 (``w``: (Co, Ci, kh, kw)):

    conv2d_forward(x, w, stride, padding) -> y                 # (N, Co, Ho, Wo)
    conv2d_backward_input(gy, w, x_shape, stride, padding) -> gx
    conv2d_backward_weight(gy, x, w_shape, stride, padding) -> gw

Depthwise convolution, groups = C (``w``: (C, 1, kh, kw)):

    depthwise_conv2d_forward(x, w, stride, padding) -> y       # (N, C, Ho, Wo)
    depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding) -> gx
    depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding) -> gw

Pointwise convolution, 1x1, stride 1, no padding (``w``: (Co, Ci, 1, 1)):

    pointwise_conv2d_forward(x, w) -> y                        # (N, Co, H, W)
    pointwise_conv2d_backward_input(gy, w) -> gx               # (N, Ci, H, W)
    pointwise_conv2d_backward_weight(gy, x) -> gw              # (Co, Ci, 1, 1)

with Ho = (H + 2 ph - kh) // sh + 1 and Wo likewise.

BatchNorm over (N, H, W) per channel, x: (N, C, H, W), weight/bias: (C,):

    batch_norm_forward_train(x, weight, bias, eps) -> (y, mean, invstd)
        mean, var = per-channel mean and *biased* variance of x,
        invstd = 1 / sqrt(var + eps), y = (x - mean) * invstd * weight + bias
    batch_norm_backward_train(gy, x, mean, invstd, weight) -> (gx, gweight, gbias)
        xhat = (x - mean) * invstd, gbias = sum(gy), gweight = sum(gy * xhat),
        gx = weight * invstd * (gy - gbias / M - xhat * gweight / M),  M = N*H*W
    batch_norm_forward_eval(x, mean, var, weight, bias, eps) -> y
        y = (x - mean) / sqrt(var + eps) * weight + bias

The three BatchNorm kernels take ``relu6=False``; with ``relu6=True`` they fuse
the ReLU6 that follows every BatchNorm but the projections in MobileNetV2: the
forwards return min(max(y, 0), 6), and ``batch_norm_backward_train(gy, x, mean,
invstd, weight, bias, relu6=True)`` first zeroes gy wherever the BatchNorm
output (recomputed from x) is outside (0, 6).

For inference the three forward convolutions take ``bn_eval=None``, or
``(mean, var, weight, bias, eps, relu6)``: their output then goes through
``batch_norm_forward_eval(y, mean, var, weight, bias, eps, relu6=relu6)``, with
the same result up to float rounding; ``numba_cpu`` applies it to each image (or
plane, or block of columns) while it is still in cache, which saves a pass over
memory per layer.

Matrix product, for the Linear layer (a or b may be transposed views):

    matmul(a, b) -> a @ b                                      # (M, K) @ (K, N)

A set may also have optional kernels, which the ops use when it does and replace by the
kernels above when it does not (``numba_cpu`` has all four): ``rmsprop_update``
(:mod:`tinymbv2.optim`), ``inverted_residual_eval`` (a whole block for inference,
:func:`tinymbv2.functional.inverted_residual_eval`), ``stage_supported`` /
``stage_forward_train`` / ``stage_backward_train`` (BatchNorm + ReLU6, depthwise 3x3,
BatchNorm + ReLU6 in training, :func:`tinymbv2.functional.depthwise_stage_train`) and
``pointwise_conv2d_backward(gy, x, w) -> (gx, gw)``, both gradients of a 1x1 convolution
at once (:class:`tinymbv2.functional.conv.PointwiseConv2d`).
"""

KERNEL_NAMES = (
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "depthwise_conv2d_forward",
    "depthwise_conv2d_backward_input",
    "depthwise_conv2d_backward_weight",
    "pointwise_conv2d_forward",
    "pointwise_conv2d_backward_input",
    "pointwise_conv2d_backward_weight",
    "batch_norm_forward_train",
    "batch_norm_backward_train",
    "batch_norm_forward_eval",
    "matmul",
)
