# %% [markdown]
r"""
# 17. Semantic segmentation: Mobile DeepLabv3

A classifier says what an image shows; a detector (chapter 16) puts boxes around things;
a **segmenter** gives every pixel a class. Section 6.3 of the MobileNetV2 paper builds one,
**Mobile DeepLabv3**: MobileNetV2 as the feature extractor, its last strides replaced by
*atrous* (dilated) convolution so the feature map stays 16 times smaller than the image
rather than 32, and DeepLabv3's head on it. Table 7 reports it on PASCAL VOC: 75.70 mIoU
with the ASPP head, 75.32 without it at under half the multiply-adds (17.4 prints the table).

This chapter builds it up piece by piece: why the output stride matters (17.2), atrous
convolution (17.3), ASPP (17.4), the bilinear upsampling that brings the logits back to the
image and its gradient (17.5), the losses, where the Dice loss the seed article put on a
classifier finally belongs (17.6), then training (17.7) and predicted masks beside the truth
(17.8). The network is `tinymbv2.models.deeplabv3_mobilenet_v2`; every op in it was checked
against PyTorch in float64 in the tests.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

from tinymbv2 import Tensor
import tinymbv2.functional as F
from tinymbv2.data import load_mnist_scenes
from tinymbv2.evaluation import colour_mask, segmentation_confusion, segmentation_scores
from tinymbv2.models import deeplabv3_mobilenet_v2, mobilenet_v2, summary
from tinymbv2.models.deeplabv3 import dilate

# %% [markdown]
r"""
## 17.1 The task and the data

The data are chapter 16's MNIST scenes: grey canvases with 1 to 6 digits. Besides boxes,
each scene has a **mask**: every pixel's class, 0 for the background, $d + 1$ for the ink of
digit $d$ (where two digits' ink meets, the brighter one). Eleven classes. The cell shows
four test scenes beside their masks and counts the pixels of each class.
"""

# %%
size = 96 if TINYMBV2_FAST else 128
scenes = load_mnist_scenes(size=size)
K = scenes.num_classes
print(scenes)
def show_mask(ax, mask, title=""):
    ax.imshow(colour_mask(mask), interpolation="nearest")   # background black, a colour per digit
    ax.set_title(title, fontsize=9); ax.axis("off")

fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
for i in range(4):
    axes[0, i].imshow(scenes.test.images[i, 0], cmap="gray"); axes[0, i].axis("off")
    show_mask(axes[1, i], scenes.test.masks[i], "digits " + " ".join(str(l - 1) for l in scenes.test.labels[i]))
fig.suptitle("test scenes (top) and their masks (bottom: one colour per digit class, background black)")
plt.tight_layout(); plt.show()

shares = np.bincount(scenes.train.masks.ravel(), minlength=K) / scenes.train.masks.size
print("share of the training pixels per class: " +
      ", ".join(f"{name} {s:.2%}" for name, s in zip(scenes.class_names, shares)))

# %% [markdown]
r"""
The background covers about 95% of the pixels; each digit class under 1%. So **pixel
accuracy** (the share of pixels labelled right) says little: a "segmenter" that answers
background everywhere scores 95%. The measure segmentation uses is the **intersection over
union** per class, from the confusion matrix $C$ ($C_{tp}$: pixels of true class $t$
predicted $p$): $\text{IoU}_k = C_{kk} / (\sum_p C_{kp} + \sum_t C_{tk} - C_{kk})$, the
overlap of the predicted and the true region of class $k$ over their union; its mean over
the classes is the **mIoU** (Table 7's measure). Every class counts the same, however few
its pixels. The all-background answer:
"""

# %%
truth = scenes.test.masks
c = segmentation_confusion(np.zeros_like(truth), truth, K)     # rows: true class; columns: predicted
scores = segmentation_scores(c)
print(f"all background: pixel accuracy {scores['pixel_accuracy']:.1%}, IoU of the background "
      f"{scores['per_class_iou'][0]:.3f}, of each digit {scores['per_class_iou'][1:].max():.0f}, "
      f"mIoU {scores['miou']:.3f}")
assert scores["pixel_accuracy"] > 0.9 and scores["miou"] < 0.1

# %% [markdown]
r"""
## 17.2 Output stride: what a coarse map can say

MobileNetV2 halves the map five times: a 128 px scene becomes a $4 \times 4$ map at the last
block (output stride 32). A segmenter predicts its classes on that map and resizes the
logits to the image. One cell of the map stands for $32 \times 32$ pixels, while the strokes
of a small digit are a few pixels wide.

How much can a map of stride $s$ say at best? The network's output *is* a map of
$(H/s) \times (W/s)$ logits resized bilinearly to the image (17.5), so no network can do
better than the best such map. The cell finds one by gradient descent: it makes the coarse
logits themselves the parameters, free of any network, and fits them to a few test masks
with the loss of 17.6 (cross-entropy + Dice), then measures their mIoU. It is an estimate of
the ceiling from below (a longer descent gains a little), found before any learning.
"""

# %%
from tinymbv2 import optim

def best_from_stride(masks, stride, steps):
    """Free (N, K, H/stride, W/stride) logits, resized bilinearly, fitted to the masks."""
    n, h, w = masks.shape
    logits = Tensor(np.zeros((n, K, h // stride, w // stride), np.float32), requires_grad=True)
    opt = optim.Adam([logits], lr=1.0)
    for _ in range(steps):
        opt.zero_grad()
        F.ce_dice_loss(F.interpolate(logits, size=(h, w)), masks).backward()
        opt.step()
    return F.interpolate(logits, size=(h, w)).numpy().argmax(1)

sample = scenes.test.masks[:8 if TINYMBV2_FAST else 16].astype(np.int64)
ceiling = {}
fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
show_mask(axes[0], sample[1], "truth")
for ax, stride in zip(axes[1:], (32, 16, 8)):
    best = best_from_stride(sample, stride, steps=30 if TINYMBV2_FAST else 80)
    ceiling[stride] = segmentation_scores(segmentation_confusion(best, sample, K))["miou"]
    print(f"output stride {stride:2d}: a {size // stride:2d}x{size // stride:<2d} map of logits; "
          f"the best found: mIoU {ceiling[stride]:.3f}")
    show_mask(ax, best[1], f"the best from output stride {stride}")
plt.tight_layout(); plt.show()
assert ceiling[32] < ceiling[16] < ceiling[8]
if not TINYMBV2_FAST:
    assert ceiling[16] < 0.6 < 0.65 < ceiling[8]
    print("checked: at 128 px, output stride 16 caps the mIoU below 0.6; output stride 8 allows over 0.65")

# %% [markdown]
r"""
At output stride 32 (a $4 \times 4$ map) even a perfect network loses most of the digits; at
16 the place and rough shape of a digit survive but its strokes are blurred over 16 px
cells; at 8 much more is there. This is what limits a segmenter of thin strokes at output
stride 16: between two cell centres a bilinear map changes smoothly, so it draws blobs, not
the thin strokes of a small digit. On a 128 px scene the best map found at output stride 16
stays below an mIoU of 0.6, and a network, which must compute its map from the image, is
not expected to beat the best map; the same digits on a 256 px canvas would get a
$16 \times 16$ map. DeepLab's answer is to keep the map fine *without* losing what the
later layers see: atrous convolution.

## 17.3 Atrous convolution on a grid

A $3 \times 3$ convolution with **dilation** (the *rate*) $r$ reads its nine taps $r$ pixels
apart: $y_{i,j} = \sum_{a,b \in \{-1,0,1\}} w_{a,b}\, x_{i + ra,\, j + rb}$ (with padding
$r$ the map keeps its size). Its taps span $2r + 1$ pixels, at the cost of nine: the same
parameters and multiply-adds as at rate 1. A dense filter over the same span would need
$(2r+1)^2$ taps.
"""

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, rate in zip(axes, (1, 2, 4)):
    grid = np.zeros((11, 11))
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            grid[5 + rate * a, 5 + rate * b] = 1
    grid[5 - rate:6 + rate, 5 - rate:6 + rate] += 0.25          # the span the taps cover
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xticks(np.arange(-0.5, 11), minor=True); ax.set_yticks(np.arange(-0.5, 11), minor=True)
    ax.grid(which="minor", color="grey", lw=0.5); ax.tick_params(which="both", length=0)
    ax.set_xticks([]); ax.set_yticks([])
    ax.set_title(f"3x3, rate {rate}: span {2 * rate + 1}x{2 * rate + 1}")
plt.tight_layout(); plt.show()

channels = 160
print(f"a 3x3 convolution {channels} -> {channels} channels, per output position:")
print(f"{'rate':>5s}{'span':>7s}{'taps':>6s}{'parameters':>12s}{'MACs':>9s}   a dense filter of that span: taps, MACs")
for rate in (1, 2, 4, 6, 12):
    span = 2 * rate + 1
    print(f"{rate:5d}{span:>5d}px{9:6d}{9 * channels ** 2:12,d}{9 * channels ** 2:9,d}"
          f"   {span ** 2:5d}, {span ** 2 * channels ** 2:,d}")

# %% [markdown]
r"""
`F.conv2d(x, w, padding=r, dilation=r)` computes it, for dense and depthwise (`groups`)
convolutions alike; the cell checks both against the formula written as a loop, in float64.
"""

# %%
def dilated_conv_loop(x, w, rate, groups=1):
    """The formula above, one output at a time (padding = rate, stride 1)."""
    n, ci, h, wd = x.shape
    co, cg = w.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (rate, rate), (rate, rate)))
    y = np.zeros((n, co, h, wd))
    for o in range(co):
        g = o // (co // groups)                            # the group output channel o reads
        for i in range(h):
            for j in range(wd):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + 2 * rate + 1:rate, j:j + 2 * rate + 1:rate]
                y[:, o, i, j] = (patch * w[o]).sum((1, 2, 3))
    return y

rng = np.random.default_rng(17)
x = rng.standard_normal((2, 4, 9, 9))
for rate in (1, 2, 3):
    for groups, w in ((1, rng.standard_normal((5, 4, 3, 3))), (4, rng.standard_normal((4, 1, 3, 3)))):
        y = F.conv2d(Tensor(x), Tensor(w), padding=rate, dilation=rate, groups=groups).numpy()
        err = np.abs(y - dilated_conv_loop(x, w, rate, groups)).max()
        print(f"rate {rate}, {'dense    ' if groups == 1 else 'depthwise'}: largest difference {err:.1e}")
        assert err < 1e-12

# %% [markdown]
r"""
And against PyTorch, forward and backward (the gradients of the input and the weight for a
random upstream gradient), with a stride as well:
"""

# %%
import torch

for groups, w in ((1, rng.standard_normal((6, 4, 3, 3))), (4, rng.standard_normal((4, 1, 3, 3)))):
    for stride, rate in ((1, 2), (2, 3)):
        tx, tw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        y = F.conv2d(tx, tw, stride=stride, padding=rate, dilation=rate, groups=groups)
        g = rng.standard_normal(y.shape)
        y.backward(g)
        px, pw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        py = torch.nn.functional.conv2d(px, pw, stride=stride, padding=rate, dilation=rate, groups=groups)
        py.backward(torch.tensor(g))
        err = max(np.abs(y.numpy() - py.detach().numpy()).max(), np.abs(tx.grad - px.grad.numpy()).max(),
                  np.abs(tw.grad - pw.grad.numpy()).max())
        print(f"{'dense' if groups == 1 else 'depthwise'}, stride {stride}, rate {rate}: "
              f"output and both gradients within {err:.1e} of PyTorch's")
        assert err < 1e-12

# %% [markdown]
r"""
### The DeepLab recipe: `dilate`

To stop MobileNetV2 at output stride 16, `dilate(features, 16)` walks the blocks: block 14,
the one that would stride to 32, gets stride 1, and the depthwise convolutions after it
dilation 2. Every later filter then reads a map twice as fine with its taps twice as far
apart: it covers the same part of the image as before, so the same weights keep their
meaning. The cell runs MobileNetV2's blocks (width 0.5) on a scene with and without it:
"""

# %%
def map_sizes(features, x):
    sizes = []
    for layer in features:
        x = layer(x)
        sizes.append(x.shape[-1])
    return sizes, x

backbone = mobilenet_v2(width_mult=0.5, in_channels=1, seed=0).features[:-1]   # stem + 17 blocks
backbone.eval()
image = Tensor(scenes.test.images[:2])
plain_sizes, plain = map_sizes(backbone, image)
dilated_sizes, dilated = map_sizes(dilate(backbone, 16), image)   # the same layers, in place
dilations = [1] + [b.conv[-3][0].dilation[0] for b in backbone[1:]]
print("block:          " + "".join(f"{i:4d}" for i in range(len(backbone))))
print("map side:       " + "".join(f"{s:4d}" for s in plain_sizes))
print("map side, os16: " + "".join(f"{s:4d}" for s in dilated_sizes))
print("dilation, os16: " + "".join(f"{d:4d}" for d in dilations))
err = np.abs(dilated.numpy()[:, :, ::2, ::2] - plain.numpy()).max() / np.abs(plain.numpy()).max()
print(f"the dilated network's map, every other cell, against the plain one: relative difference {err:.1e}")
assert plain_sizes[-1] * 2 == dilated_sizes[-1] == size // 16 and err < 1e-5

# %% [markdown]
r"""
Same weights, a map four times as large (twice per side), and on every other cell the very
numbers of the plain network (in eval mode; the equality is up to float32 rounding). The
price is compute: blocks 14-17 now run on four times the positions.

## 17.4 ASPP: several rates at once

A digit may be 14 px or 64 px; a single rate sees one scale. DeepLabv3's **Atrous Spatial
Pyramid Pooling** runs five branches side by side on the backbone's map and concatenates
them: a $1 \times 1$ convolution, three $3 \times 3$ atrous convolutions (rates 6, 12, 18 at
output stride 16), and **image pooling** (the map's mean, a $1 \times 1$ convolution, spread
back over the map: the whole image as context). A $1 \times 1$ projection mixes the five
(256 channels each), then the classifier. The paper's cheaper head "without ASPP" keeps only
the $1 \times 1$ and image-pooling branches.
"""

# %%
net = deeplabv3_mobilenet_v2(K, head="aspp", width_mult=0.5, in_channels=1, seed=0)
aspp = net.classifier[0]
for name, branch in zip(["1x1", "3x3 rate a", "3x3 rate b", "3x3 rate c", "image pooling"], aspp.convs):
    print(f"  {name:14s}", branch)

# %% [markdown]
r"""
The rates must fit the map. A tap that falls outside reads the zero padding; once the rate
reaches the map's side, all but the centre tap fall outside at every position, and the
branch is an expensive $1 \times 1$ convolution (DeepLabv3's Figure 4 shows this). The cell
counts, for each map side and rate, the share of the nine taps that read inside the map,
averaged over the positions. torchvision's `DeepLabHead` hard-codes rates 12, 24, 36
(DeepLabv3's choice at output stride 8); `deeplabv3_mobilenet_v2` defaults to 6, 12, 18 at
output stride 16 and doubles them at 8.
"""

# %%
def taps_inside(side, rate):
    """The mean share of a 3x3's nine taps (rate r, padding r) inside a side x side map."""
    pos = np.arange(side)
    inside = sum(((pos + rate * a >= 0) & (pos + rate * a < side)).sum() for a in (-1, 0, 1))
    return inside ** 2 / (9 * side ** 2)   # the 2-D count is the product of the two 1-D ones

rates = (6, 12, 18, 24, 36)
print(f"{'map side (image at os16)':26s}" + "".join(f"{'rate ' + str(r):>9s}" for r in rates))
for side in (8, 16, 32):
    print(f"{f'{side:2d} ({16 * side} px)':26s}" + "".join(f"{taps_inside(side, r):9.0%}" for r in rates))
assert taps_inside(8, 12) == 1 / 9 and taps_inside(32, 36) == 1 / 9 and taps_inside(32, 6) > 0.7

# %% [markdown]
r"""
On the $8 \times 8$ map of a 128 px scene only the rate-6 branch sees past its centre; rates
12 and up are $1 \times 1$ convolutions there. Even at 512 px (the paper's $32 \times 32$
map) torchvision's rate 36 never reads a neighbour. The rates are a parameter
(`atrous_rates=`), and a small image wants small ones.

### The heads against Table 7

Table 7 counts the models for PASCAL VOC (21 classes) at 512 px, output stride 16. `summary`
counts ours layer by layer (parameters, and multiply-adds of the convolutions; resizing and
BatchNorm count none):
"""

# %%
paper = {"aspp": (4.52e6, 5.8e9, 75.70), "simple": (2.11e6, 2.75e9, 75.32)}   # parameters, MACs, mIoU
print(f"{'21 classes, 512 px, os16':26s}{'parameters':>12s}{'MACs':>9s}{'backbone':>10s}{'head':>8s}   Table 7 (PASCAL VOC)")
for head in ("aspp", "simple"):
    s = summary(deeplabv3_mobilenet_v2(21, head=head, seed=0), (3, 512, 512))
    bb = s.part("backbone")
    print(f"{head:26s}{s.total_params / 1e6:11.2f}M{s.total_macs / 1e9:8.2f}B{bb[1] / 1e9:9.2f}B"
          f"{(s.total_macs - bb[1]) / 1e9:7.2f}B   {paper[head][0] / 1e6:.2f}M, {paper[head][1] / 1e9:.2f}B, "
          f"mIoU {paper[head][2]:.2f}")
    if head == "simple":
        assert s.total_params == 2_113_557        # Table 7's 2.11M
    else:
        assert s.total_params == 5_113_877
print("\nthis chapter's networks: width 0.5, 11 classes, one channel, " f"{size} px:")
for head in ("aspp", "simple", "lraspp"):
    s = summary(deeplabv3_mobilenet_v2(K, head=head, width_mult=0.5, in_channels=1, seed=0), (1, size, size))
    print(f"  {head:8s}{s.total_params / 1e6:6.2f}M parameters, {s.total_macs / 1e6:6.1f}M MACs")

# %% [markdown]
r"""
The head without ASPP is Table 7's 2.11M parameters exactly. Our ASPP model has 0.6M more
than the paper's 4.52M: torchvision's `DeepLabHead` adds a $3 \times 3$ convolution
(256 to 256) after ASPP that DeepLabv3 does not have. The multiply-adds differ for reasons
the facts page (`docs/article-errors.md`, "The paper's segmenter, recomputed") traces: DeepLab runs
at 513 px (33 x 33 maps, not 32 x 32), and TensorFlow computes its atrous convolutions on a
padded map. Either way the ASPP head costs more than the whole backbone, and its 3x3 branches
are most of it: the paper gives up 0.38 mIoU to drop them.

## 17.5 Bilinear upsampling and its gradient

The head's logits are $(N, K, H/16, W/16)$; `F.interpolate` resizes them bilinearly to the
image. Along one axis each output is a weighted mean of the two nearest inputs, so resizing
a length-$n$ signal to length $m$ is a matrix $W$ ($m \times n$), and a plane is resized as
$Y = W_h X W_w^\top$. With `align_corners=False` (what the network uses) output pixel $o$
sits at $s = (o + 0.5)\, n / m - 0.5$ in the input (pixel *centres* line up, clamped at the
edges); with `True`, at $s = o\,(n - 1)/(m - 1)$ (the corner pixels line up). The cell reads
$W$ off `F.interpolate` by resizing the identity.
"""

# %%
def resize_matrix(n, m, align_corners):
    """W (m, n): row o holds the weights output o gives to the n inputs (one axis)."""
    eye = Tensor(np.eye(n)[:, None, None, :])                      # n signals of length n
    return F.interpolate(eye, size=(1, m), mode="bilinear", align_corners=align_corners).numpy()[:, 0, 0, :].T

fig, axes = plt.subplots(1, 2, figsize=(8, 4.6))
for ax, corners in zip(axes, (False, True)):
    W = resize_matrix(4, 16, corners)
    ax.imshow(W, cmap="viridis"); ax.set_xlabel("input pixel"); ax.set_ylabel("output pixel")
    ax.set_title(f"4 -> 16, align_corners={corners}", fontsize=10)
    print(f"align_corners={corners!s:5s}: rows sum to {W.sum(1).min():.3f}..{W.sum(1).max():.3f}; "
          f"columns sum to {np.round(W.sum(0), 3)}")
    assert np.allclose(W.sum(1), 1)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Every row sums to 1 (a weighted mean). The columns say how much of the output each input
pixel feeds, and that is its gradient's share: since $Y = W_h X W_w^\top$ is linear in $X$,
the gradient for an upstream gradient $G$ is
$\partial L/\partial X = W_h^\top G\, W_w$: the **transposed** matrices, so the backward
pass of upsampling is a (weighted) downsampling. With `align_corners=False` and a whole
factor every input pixel feeds the same total, the factor (the clamped edge outputs make up
for the edge pixels' missing neighbours); with `True` the corner pixels feed less than the
inner ones. The cell checks
$W_h^\top G W_w$ against `backward` of `F.interpolate`, and against PyTorch:
"""

# %%
h, w, H, Wd = 4, 5, 16, 20
X = rng.standard_normal((1, 1, h, w))
G = rng.standard_normal((1, 1, H, Wd))
for corners in (False, True):
    Wh, Ww = resize_matrix(h, H, corners), resize_matrix(w, Wd, corners)
    tx = Tensor(X, requires_grad=True)
    y = F.interpolate(tx, size=(H, Wd), mode="bilinear", align_corners=corners)
    y.backward(G)
    fwd = np.abs(y.numpy()[0, 0] - Wh @ X[0, 0] @ Ww.T).max()
    bwd = np.abs(tx.grad[0, 0] - Wh.T @ G[0, 0] @ Ww).max()
    px = torch.tensor(X, requires_grad=True)
    py = torch.nn.functional.interpolate(px, size=(H, Wd), mode="bilinear", align_corners=corners)
    py.backward(torch.tensor(G))
    vs_torch = max(np.abs(y.numpy() - py.detach().numpy()).max(), np.abs(tx.grad - px.grad.numpy()).max())
    print(f"align_corners={corners!s:5s}: forward vs W_h X W_w^T {fwd:.1e}; backward vs W_h^T G W_w "
          f"{bwd:.1e}; both vs PyTorch {vs_torch:.1e}")
    assert max(fwd, bwd, vs_torch) < 1e-12

# %% [markdown]
r"""
## 17.6 The losses, and where Dice belongs

The usual segmentation loss is chapter 7's cross-entropy applied at every pixel:
`F.cross_entropy` on $(N, K, H, W)$ logits and $(N, H, W)$ targets averages it over all the
pixels. With 95% of the pixels background, the background dominates the sum: a network can
lower the loss a lot by getting the background right and ignoring a small class.

The **soft Dice loss** measures overlap instead. With softmax probabilities $p_{ik}$ and the
one-hot truth $g_{ik}$ over all the pixels $i$ of a batch,
$\text{dice}_k = \frac{2 \sum_i p_{ik} g_{ik} + s}{\sum_i p_{ik} + \sum_i g_{ik} + s}$ and
$L_\text{Dice} = 1 - \frac1K \sum_k \text{dice}_k$ (`F.dice_loss`; $s = 1$). Each class's
overlap counts the same, however many pixels it has: the mIoU's idea made differentiable.
Chapter 7 met it on a classifier, where the seed article had put it (with the wrong sign),
and saw a weak signal there: one label per image has no "region" to overlap. A segmentation
mask is a region; this is where Dice belongs. `F.ce_dice_loss` adds the two.

A toy shows the difference. Each pixel has one feature: the background's is drawn from
$\mathcal N(0, 1)$, a small class's (2% of the pixels) from $\mathcal N(2, 1)$; a per-pixel
linear classifier (a $1 \times 1$ convolution, two weights and two biases) is trained with
each loss.
"""

# %%
from tinymbv2 import nn

toy_rng = np.random.default_rng(0)
labels = (toy_rng.random((4, 64, 64)) < 0.02).astype(np.int64)
feature = toy_rng.standard_normal(labels.shape) + 2.0 * labels
losses = {"cross-entropy": F.cross_entropy, "Dice": F.dice_loss, "CE + Dice": F.ce_dice_loss}
toy_iou = {}
for name, loss_fn in losses.items():
    classifier = nn.Conv2d(1, 2, 1)
    classifier.weight.data[...] = 0; classifier.bias.data[...] = 0
    opt = optim.Adam(classifier.parameters(), lr=0.05)
    for step in range(300):
        opt.zero_grad()
        loss = loss_fn(classifier(Tensor(feature[:, None].astype(np.float32))), labels)
        loss.backward(); opt.step()
    pred = classifier(Tensor(feature[:, None].astype(np.float32))).numpy().argmax(1)
    iou = segmentation_scores(segmentation_confusion(pred, labels, 2))["per_class_iou"]
    toy_iou[name] = iou
    wt, bt = classifier.weight.data[:, 0, 0, 0], classifier.bias.data
    threshold = -(bt[1] - bt[0]) / (wt[1] - wt[0])               # where the two logits meet
    recall = (pred[labels == 1] == 1).mean()
    print(f"{name:14s} threshold {threshold:5.2f}: small class IoU {iou[1]:.3f} (recall {recall:.0%}), "
          f"background IoU {iou[0]:.3f}")
assert toy_iou["Dice"][1] > toy_iou["cross-entropy"][1] + 0.05
assert toy_iou["CE + Dice"][1] > toy_iou["cross-entropy"][1]

# %% [markdown]
r"""
Cross-entropy puts the threshold where the two classes' posterior probabilities meet, far
into the small class's side: it is right about the pixels it labels, and finds few. Dice
moves the threshold toward the background, trading a few background pixels (which the
background's IoU barely notices) for many of the small class's: a better IoU for the class
that covers 2% of the pixels. CE + Dice lies between. The digits of the scenes are such
classes, under 1% of the pixels each.

## 17.7 Training

The segmenter trains on the same loop as the classifiers and the detector (`fit`,
checkpoints, resume), with the per-pixel loss and, after each epoch, the validation scenes'
mIoU. Its recipe, `TASK_DEFAULTS["segment"]` (what `tinymbv2 train --task segment` uses),
changes two things 17.2's ceilings ask for.

**The scenes are drawn at 256 px**, with the digits grown with the canvas
(`scaled_digit_sides`: twice the sides of the 128 px scenes, so strokes twice as wide in
pixels). At output stride 16 the network's map is then $16 \times 16$, the map 17.2 fitted
at output stride 8 on 128 px scenes: relative to the strokes, the output stride is halved,
and the ceiling is about 17.2's output-stride-8 row rather than its output-stride-16 row
(about: the 256 px scenes are drawn the same way with every length doubled, not the 128 px
scenes scaled up; the cell compares how much of each is ink). The
price is four times the pixels, so four times the multiply-adds per scene. **The head is
LR-ASPP** (`head="lraspp"`, torchvision's, from the MobileNetV3 paper): besides the
upsampled high-level branch on the 320 channels at output stride 16, a branch on block 4's
map at output stride 8 adds its logits, so the classes are drawn on a map twice finer again;
and it is the cheapest of the three heads (17.4). The cell prints the recipe, the two
ceilings, the cost, and the share of digit pixels at both sizes:
"""

# %%
from tinymbv2.data import scaled_digit_sides
from tinymbv2.train.run import task_scenes
from tinymbv2.train.config import TASK_DEFAULTS

recipe = TASK_DEFAULTS["segment"]
print("the segmenter's recipe:", recipe)
big, half = recipe["image_size"], recipe["image_size"] // 2
n_train = 200 if TINYMBV2_FAST else 1000       # 17.7's run: the recipe's scenes, fewer of them
print(f"digit sides: {scaled_digit_sides(half)} px at {half} px, {scaled_digit_sides(big)} px at {big} px")
print(f"at {size} px, output stride 16 gives a {size // 16}x{size // 16} map: ceiling about {ceiling[16]:.2f} (17.2); "
      f"at {2 * size} px a {size // 8}x{size // 8} map, as output stride 8 at {size} px: about {ceiling[8]:.2f}")
cost = {side: summary(deeplabv3_mobilenet_v2(K, head="lraspp", width_mult=0.5, in_channels=1, seed=0),
                      (1, side, side)).total_macs for side in (half, big)}
print(f"LR-ASPP, width 0.5: {cost[half] / 1e6:.0f}M MACs at {half} px, {cost[big] / 1e6:.0f}M at {big} px "
      f"({cost[big] / cost[half]:.1f}x)")
assert 3.5 < cost[big] / cost[half] < 4.5
if not TINYMBV2_FAST:
    wide = task_scenes("segment", big, n_train)     # the scenes 17.7's run trains on (cached: it reuses them)
    ink = {size: (scenes.test.masks > 0).mean(), big: (wide.test.masks > 0).mean()}
    assert abs(ink[big] / ink[size] - 1) < 0.2
    print(f"checked: digit pixels are {ink[size]:.1%} of the {size} px test scenes and {ink[big]:.1%} of the "
          f"{big} px ones: the strokes grow with the canvas")

# %% [markdown]
r"""
The recipe itself trains 4 epochs of 4,000 scenes with one-cycle SGD (peak rate 0.05),
CE + Dice and batches of 8 (the issue asks it to train in at most 20 minutes on two cores
and reach an mIoU of 0.70 on the test scenes; `docs/benchmarks.md` reports what it reaches). The cell
runs the same recipe, `run_training(TrainConfig(task="segment", dataset="mnist-scenes",
...))` as `tinymbv2 train --task segment --dataset mnist-scenes` would, taking every setting
from `TASK_DEFAULTS` except how long it trains: 1,000 scenes for 2 epochs, a few minutes.
"""

# %%
import tempfile
import time
from tinymbv2.train import TrainConfig, load_trained, run_training

config = TrainConfig(task="segment", dataset="mnist-scenes", out=tempfile.mkdtemp(prefix="ch17_"),
                     image_size=96 if TINYMBV2_FAST else big,      # fast mode: small scenes, few of them
                     train_scenes=n_train, epochs=1 if TINYMBV2_FAST else 2)
assert all(getattr(config, k) == v for k, v in recipe.items() if k not in ("image_size", "train_scenes", "epochs"))
print(f"{config.optimizer}, {config.schedule}, lr {config.lr}, loss {config.loss}, head {config.head}, "
      f"output stride {config.output_stride}, batch {config.batch_size}, width {config.width}; "
      f"{config.train_scenes} scenes of {config.image_size} px, {config.epochs} epochs: "
      f"{recipe['train_scenes'] * recipe['epochs'] / (config.train_scenes * config.epochs):.1f} times fewer "
      f"scene-epochs than the recipe")
start = time.perf_counter()
metrics = run_training(config, progress=False)
print(f"trained and scored in {time.perf_counter() - start:.0f} s")
print("validation mIoU after each epoch: " + ", ".join(f"{m:.3f}" for m in metrics["history"]["val_miou"]))

# %% [markdown]
r"""
## 17.8 Predicted masks beside the truth

The test scenes' scores (the run's own test scenes, at its size): mIoU over the 11 classes,
each class's IoU, and the pixel accuracy (17.1 said why it flatters). Beside them, the
ceiling of its output-stride-16 map (17.2's output-stride-8 row, at half the scale; LR-ASPP's
finer branch may add to it), and two shares of the digits' pixels: those predicted as *a* digit (the segmenter knows where the
ink is) and those predicted as the *right* digit (it knows which digit it is).
"""

# %%
ceiling_here = ceiling[8] if config.image_size == 2 * size else ceiling[16]   # 17.2's row for this map, relative to the strokes
print(f"test scenes: mIoU {metrics['test_miou']:.3f} (the ceiling of an output-stride-16 map at this scale: about "
      f"{ceiling_here:.2f}; "
      f"the recipe's target for its full run: 0.70), pixel accuracy {metrics['test_pixel_accuracy']:.1%}")
print("IoU per class: " + ", ".join(f"{name} {iou:.2f}" for name, iou in metrics["per_class_iou"].items()))
digits = {name: iou for name, iou in metrics["per_class_iou"].items() if name != "background"}
print(f"hardest digit: {min(digits, key=digits.get)}; easiest: {max(digits, key=digits.get)}")
conf = np.asarray(metrics["confusion_matrix"], dtype=float)   # rows: true class, columns: predicted
found = conf[1:, 1:].sum() / conf[1:].sum()                     # digit pixels predicted as some digit
named = np.trace(conf[1:, 1:]) / conf[1:].sum()                 # ... as the right one
print(f"the test pixels of digits: {found:.0%} predicted as a digit, {named:.0%} as the right digit")
if not TINYMBV2_FAST:
    val = metrics["history"]["val_miou"]
    assert 0.1 < metrics["test_miou"] < 0.70 and named < found and val[-1] > val[0]
    print("checked: this short run is above the all-background 0.087 and below the full recipe's target 0.70; "
          "its validation mIoU rose from epoch to epoch; it finds more digit pixels than it names right")

# %%
from tinymbv2.evaluation import overlay_mask, segment
from tinymbv2.train.run import segmentation_data

data = segmentation_data(config)                                         # the run's scenes and normalisation
segmenter, _ = load_trained(f"{config.out}/model.npz")                   # the run's final weights
shown = np.arange(6)
predicted = segment(segmenter, data.test.images[shown])
fig, axes = plt.subplots(3, len(shown), figsize=(14, 7.4))
for col, i in enumerate(shown):
    axes[0, col].imshow(overlay_mask(data.scenes.test.images[i], predicted[col])); axes[0, col].axis("off")
    show_mask(axes[1, col], data.test.masks[i], "truth" if col == 0 else "")
    show_mask(axes[2, col], predicted[col], "predicted" if col == 0 else "")
fig.suptitle(f"{config.image_size} px test scenes with the predicted mask over them (top), the true masks, the predicted masks")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
A run of a few minutes from scratch learns *where* before *which*: finding ink on a plain
background is easy, telling a 4 from a 9 at every pixel is MNIST classification learned
from the masks alone, and the validation mIoU was still rising when the run stopped; the
recipe's full run trains on many times more scene-epochs (printed in 17.7). Compare the predicted outlines
with 17.2's best maps: what the output stride allows is smooth shapes, not strokes. The
confusion matrix, each row divided by its true pixels, shows where each class's pixels go:
to the background (column 0), to the right digit (the diagonal), or to another digit.
"""

# %%
rows = conf / conf.sum(1, keepdims=True)
fig, ax = plt.subplots(figsize=(6.4, 5.6))
im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(K)); ax.set_yticks(range(K))
ax.set_xticklabels(["bg"] + [str(d) for d in range(10)]); ax.set_yticklabels(["bg"] + [str(d) for d in range(10)])
ax.set_xlabel("predicted class"); ax.set_ylabel("true class")
fig.colorbar(im, ax=ax, label="share of the true class's pixels"); ax.set_title("test pixels")
plt.tight_layout(); plt.show()
to_background = rows[1:, 0]
off = rows[1:, 1:] - np.diag(np.diag(rows[1:, 1:]))
print(f"digit pixels predicted as background: {to_background.min():.0%} to {to_background.max():.0%} "
      f"per digit; the largest confusion between digits: {off.max():.1%} "
      f"(true {np.unravel_index(off.argmax(), off.shape)[0]}, predicted {np.unravel_index(off.argmax(), off.shape)[1]})")

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 17.1

Write `receptive_field(layers)`: the side, in input pixels, of the window one output pixel of
a stack of convolutions reads. `layers` is `[(kernel, stride, dilation), ...]`, input first.
(Each layer widens the window by $(k - 1)\,d$ pixels *of its own input*; how many input
pixels is one of those?)
"""

# %%
from tinymbv2.exercises import check_receptive_field

def receptive_field(layers):
    """layers: [(kernel, stride, dilation), ...] from the input up -> the receptive field, an int."""
    raise NotImplementedError("your code here")

check_receptive_field(receptive_field)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def receptive_field(layers):
    field, jump = 1, 1                 # jump: input pixels between two pixels of the current map
    for kernel, stride, dilation in layers:
        field += (kernel - 1) * dilation * jump
        jump *= stride
    return field
```

Three 3x3 convolutions at rates 1, 2, 4 see $1 + 2\,(1 + 2 + 4) = 15$ pixels with 27 taps;
DeepLab's `dilate` keeps each later layer's `dilation * jump` as it was, hence the same field.

</details>

### Exercise 17.2

Write `resize_weights(n_in, n_out, align_corners)`: the $(n_\text{out}, n_\text{in})$ matrix
$W$ of 17.5, from the source positions (not by calling `F.interpolate`).
"""

# %%
from tinymbv2.exercises import check_bilinear_matrix

def resize_weights(n_in, n_out, align_corners):
    """Bilinear resizing of a length-n_in signal to n_out, as an (n_out, n_in) matrix."""
    raise NotImplementedError("your code here")

check_bilinear_matrix(resize_weights)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def resize_weights(n_in, n_out, align_corners):
    o = np.arange(n_out)
    if align_corners:
        s = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    else:
        s = np.maximum((o + 0.5) * n_in / n_out - 0.5, 0)     # pixel centres; clamped at the edge
    lo = np.minimum(np.floor(s).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    W = np.zeros((n_out, n_in))
    np.add.at(W, (o, lo), 1 - (s - lo))                        # add: lo and hi meet at the edge
    np.add.at(W, (o, hi), s - lo)
    return W
```

</details>

### Exercise 17.3

Write `iou_from_confusion(c)`: each class's IoU from a $(K, K)$ confusion matrix (rows: the
true class, columns: the predicted one), NaN for a class that is neither true nor predicted.
"""

# %%
from tinymbv2.exercises import check_iou_from_confusion

def iou_from_confusion(c):
    """c (K, K) pixel counts, rows true, columns predicted -> (K,) IoU per class."""
    raise NotImplementedError("your code here")

check_iou_from_confusion(iou_from_confusion)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def iou_from_confusion(c):
    inter = np.diag(c).astype(float)
    union = c.sum(0) + c.sum(1) - inter       # predicted as k, or truly k, counted once
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union
```

</details>
"""
