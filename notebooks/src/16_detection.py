# %% [markdown]
r"""
# 16. Object detection: SSDLite on MobileNetV2

A classifier says *what* is in an image. A detector says what is *where*: a list of boxes,
each with a class and a score. Section 6.2 of the MobileNetV2 paper builds one, **SSDLite**:
the Single Shot Detector (Liu et al., 2016) with every prediction layer made
depthwise-separable, on MobileNetV2's feature maps. The idea of SSD in four steps:

1. **default boxes**: a fixed set of boxes of several sizes and shapes, tiled over several
   feature maps (small boxes on the fine maps, large ones on the coarse maps);
2. **matching**: each ground-truth box is assigned the default boxes that overlap it enough;
3. **prediction**: for every default box, the network predicts class scores and four
   *offsets* that move the default box onto the object;
4. **post-processing**: keep the confident boxes, decode them, and remove duplicates with
   non-maximum suppression.

Everything here is built in `tinymbv2.detection` (boxes, default boxes, matching, the loss,
post-processing) and `tinymbv2.models.ssdlite` (the network), each checked against
torchvision's own code in the tests. We train it on **MNIST scenes**: grey canvases holding
1 to 6 digits of the bundled MNIST images at random sizes, made offline by
`tinymbv2.data.load_mnist_scenes`.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

from tinymbv2 import Tensor
from tinymbv2.data import Normalize, load_mnist_scenes
from tinymbv2.detection import (BoxCoder, DefaultBoxGenerator, SSDMatcher, box_iou,
                                default_boxes_for, ssd_loss)
from tinymbv2.evaluation import draw_detections
from tinymbv2.models import ssdlite_mobilenet_v2, summary

# %% [markdown]
r"""
## 16.1 MNIST scenes

`load_mnist_scenes(size)` draws 2,000 training, 250 validation and 500 test scenes from the
three splits of mnist5k, so no test digit was ever seen in training. Each digit is resized to
14-64 px and placed where it overlaps no other digit by more than a fifth of the smaller box.
Its box is tight around its ink; its label is the digit plus one (class 0 is the background,
which a detector needs as a class of its own). The scenes are a pure function of their seed:
every machine makes the same ones.
"""

# %%
size = 96 if TINYMBV2_FAST else 128
scenes = load_mnist_scenes(size=size)
print(scenes)
counts = np.array([len(b) for b in scenes.train.boxes])
all_boxes = np.concatenate(scenes.train.boxes)
sides = np.maximum(all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1])
print(f"training scenes: {counts.sum()} digits, {counts.min()}-{counts.max()} per scene "
      f"(mean {counts.mean():.2f}); box sides {sides.min():.0f}-{sides.max():.0f} px "
      f"(median {np.median(sides):.0f})")

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for i, ax in enumerate(axes):
    truth = {"boxes": scenes.test.boxes[i], "scores": np.ones(len(scenes.test.boxes[i])),
             "labels": scenes.test.labels[i]}
    ax.imshow(np.asarray(draw_detections(scenes.test.images[i], truth, scenes.class_names, scale=2)))
    ax.axis("off")
fig.suptitle("test scenes with their true boxes and classes")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 16.2 Default boxes

The detector looks at six feature maps: block 14's expansion (stride 16), the backbone's last
layer (stride 32) and four extra blocks that halve the map each time. Map $k$ of $m = 6$ gets
boxes of scale $s_k = s_\text{min} + (s_\text{max} - s_\text{min})\,k / (m - 1)$ of the image,
with SSDLite's $s_\text{min} = 0.2$, $s_\text{max} = 0.95$: at every cell, a square of side
$s_k$, a square of side $\sqrt{s_k s_{k+1}}$, and two boxes for each aspect ratio 2 and 3
($s_k\sqrt r \times s_k / \sqrt r$ and its transpose): 6 boxes per cell.
"""

# %%
model = ssdlite_mobilenet_v2(11, width_mult=0.5, size=size, in_channels=1, seed=0)
maps = model.feature_map_sizes(size, size)
generator = DefaultBoxGenerator(model.aspect_ratios, model.min_ratio, model.max_ratio)
anchors = default_boxes_for(model, (size, size))
print(f"{size} px input: {len(anchors)} default boxes")
for k, (h, w) in enumerate(maps):
    print(f"  map {k}: {h}x{w} cells x 6 boxes = {h * w * 6:4d}; scale {generator.scales[k]:.2f} "
          f"= {generator.scales[k] * size:5.1f} px squares")
assert len(anchors) == 6 * sum(h * w for h, w in maps)

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
start = 0
for k, (h, w) in enumerate(maps):
    cell = (h // 2) * w + w // 2                     # the centre cell of map k
    boxes = anchors[start + 6 * cell: start + 6 * cell + 6]
    start += 6 * h * w
    if k in (0, 1, 2):
        ax = axes[k]
        ax.imshow(scenes.test.images[0, 0], cmap="gray")
        for x1, y1, x2, y2 in boxes:
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="orange"))
        ax.set_title(f"map {k} ({h}x{w}): the 6 boxes of one cell"); ax.axis("off")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 16.3 Matching: which default boxes learn which digit

A default box learns a digit if their IoU (intersection over union) is at least 0.5; every
other default box learns "background". Then every digit also takes its single best default
box, even below 0.5, so that it has one to learn from; only when two digits have the same
best default box does the later one keep it, and the earlier digit is left with none. The
smallest default boxes are $0.2 \times 128 \approx 26$ px squares: a thin digit 1 of 14 px
overlaps them little, and the forced match is what gives it a box to learn. The cell counts
both kinds over the training scenes, and the digits left without any.
"""

# %%
matcher = SSDMatcher(0.5)
per_digit, forced_only = [], 0
for boxes in scenes.train.boxes[:500]:
    iou = box_iou(boxes, anchors)
    matches = matcher(iou)
    for j in range(len(boxes)):
        n = int((matches == j).sum())
        per_digit.append(n)
        forced_only += int(iou[j].max() < 0.5)
per_digit = np.array(per_digit)
print(f"{len(per_digit)} digits in 500 scenes: default boxes matched per digit "
      f"min {per_digit.min()}, median {np.median(per_digit):.0f}, max {per_digit.max()}; "
      f"{forced_only} digits ({forced_only / len(per_digit):.0%}) overlap no default box by 0.5 "
      f"and learn only their forced match; {(per_digit == 0).sum()} lost theirs to a neighbour")
print(f"default boxes that learn background: {1 - (per_digit.sum() / 500) / len(anchors):.1%} "
      f"of them in a typical scene")

# %% [markdown]
r"""
## 16.4 The box encoding

The network does not output corners: for default box $d$ (centre $d_x, d_y$, size
$d_w, d_h$) it outputs the offsets of its digit $g$,
$t = \big(10\,\frac{g_x - d_x}{d_w},\ 10\,\frac{g_y - d_y}{d_h},\ 5 \log\frac{g_w}{d_w},\
5 \log\frac{g_h}{d_h}\big)$: a shift measured in default-box widths and a log ratio of
sizes, the same scale for a small box and a large one. Decoding inverts it exactly.
"""

# %%
coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
boxes = scenes.train.boxes[0].astype(np.float64)
matches = matcher(box_iou(boxes, anchors))
fg = np.flatnonzero(matches >= 0)
offsets = coder.encode(boxes[matches[fg]], anchors[fg])
print(f"scene 0: {len(boxes)} digits, {len(fg)} matched default boxes; offsets of the first three:")
print(offsets[:3].round(3))
decoded = coder.decode(offsets, anchors[fg])
print(f"largest error of decode(encode(box)): {np.abs(decoded - boxes[matches[fg]]).max():.1e} px")
assert np.abs(decoded - boxes[matches[fg]]).max() < 1e-9

# %% [markdown]
r"""
## 16.5 The loss, with hard-negative mining

For a batch: smooth L1 on the offsets of the matched default boxes, and cross-entropy on the
class of every default box kept, both divided by the number of matched boxes $P$. Nearly all
default boxes are background; counting them all would drown the few digits, so each image
keeps only the $3\times$(its matched boxes) background boxes with the highest loss, the
ones the network gets most wrong ("hard negatives"). The cell runs the untrained detector on
a batch, shows the counts, and compares the loss with torchvision's `SSD.compute_loss` on the
same outputs.
"""

# %%
normalize = Normalize.from_data(scenes.train.images)
batch = np.arange(8)
model.train()
cls, box = model(Tensor(normalize(scenes.train.images[batch])))
targets = scenes.train.targets(batch)
parts = ssd_loss(cls, box, anchors, targets)
print(f"outputs: class logits {cls.shape}, box offsets {box.shape}; "
      f"{parts['num_matched']} matched default boxes in 8 scenes, so "
      f"{3 * parts['num_matched']} hard negatives kept of "
      f"{8 * len(anchors) - parts['num_matched']} background boxes")
print(f"loss: box regression {parts['bbox_regression'].item():.4f}, "
      f"classification {parts['classification'].item():.4f}")

# %%
from types import SimpleNamespace
import torch
from torchvision.ops import box_iou as tv_box_iou
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder, SSDMatcher as TvSSDMatcher
from torchvision.models.detection.ssd import SSD

# float64 on torchvision's side, as tinymbv2 matches: in float32, default boxes whose IoU with
# a digit differ in the last bits can tie, and a tie may give the forced match to another box
tv_anchors = torch.tensor(anchors, dtype=torch.float64)
tv_targets = [{"boxes": torch.tensor(t["boxes"], dtype=torch.float64), "labels": torch.tensor(t["labels"])}
              for t in targets]
matched = [TvSSDMatcher(0.5)(tv_box_iou(t["boxes"], tv_anchors)) for t in tv_targets]
# SSD.compute_loss reads only these two attributes of the detector
ssd = SimpleNamespace(box_coder=TvBoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3.0)
ref = SSD.compute_loss(ssd, tv_targets, {"cls_logits": torch.tensor(cls.numpy(), dtype=torch.float64),
                                         "bbox_regression": torch.tensor(box.numpy(), dtype=torch.float64)},
                       [tv_anchors] * len(targets), matched)
for name in ("bbox_regression", "classification"):
    diff = abs(parts[name].item() - ref[name].item()) / abs(ref[name].item())
    print(f"{name:16s} tinymbv2 {parts[name].item():.6f}  torchvision {ref[name].item():.6f}  "
          f"relative difference {diff:.1e}")
    assert diff < 1e-5   # our loss is summed in float32, torchvision's here in float64

# %% [markdown]
r"""
## 16.6 What "Lite" saves: the paper's Table 5, recomputed

SSD predicts with dense $3\times3$ convolutions; SSDLite replaces each by a $3\times3$
depthwise convolution and a $1\times1$ convolution, the factorisation of chapter 2. The paper
counts both heads (the extra layers and the predictors) for COCO's 80 classes and the
background at 320 px, with the TF Object Detection API's 3 boxes in the lowest layer. The
cell builds both out of the library's layers and counts them with `summary`.
"""

# %%
from tinymbv2 import nn
from tinymbv2.models import Conv2dNormActivation
from tinymbv2.models.ssdlite import EXTRA_CHANNELS, SSDLiteHead

coco = ssdlite_mobilenet_v2(81, seed=0)
coco_maps, channels = coco.feature_map_sizes(320, 320), coco.backbone.out_channels
boxes_per_cell = [3, 6, 6, 6, 6, 6]                        # TF's layout
coco.head = SSDLiteHead(channels, boxes_per_cell, 81)
full = summary(coco, (3, 320, 320))
backbone = full.part("backbone.features")
lite = (full.total_params - backbone[0], full.total_macs - backbone[1])
dense_parts = [(nn.Conv2d(c, a * k, 3, padding=1), (c, h, w))
               for (h, w), c, a in zip(coco_maps, channels, boxes_per_cell) for k in (81, 4)]
dense_parts += [(nn.Sequential(Conv2dNormActivation(c, o // 2, kernel_size=1),
                               Conv2dNormActivation(o // 2, o, stride=2)), (c, h, w))
                for (h, w), c, o in zip(coco_maps[1:], channels[1:], EXTRA_CHANNELS)]
dense = [summary(m, s) for m, s in dense_parts]
ssd = (sum(d.total_params for d in dense), sum(d.total_macs for d in dense))
print(f"{'':22s}{'parameters':>12s}{'multiply-adds':>15s}   the paper")
print(f"{'SSD heads':22s}{ssd[0] / 1e6:11.2f}M{ssd[1] / 1e9:14.3f}B   14.8M, 1.25B")
print(f"{'SSDLite heads':22s}{lite[0] / 1e6:11.2f}M{lite[1] / 1e9:14.3f}B   2.1M, 0.35B")
print(f"{'MobileNetV2 + SSDLite':22s}{full.total_params / 1e6:11.2f}M{full.total_macs / 1e9:14.3f}B   4.3M, 0.8B")
print(f"SSDLite's heads: {ssd[0] / lite[0]:.1f}x fewer parameters, {ssd[1] / lite[1]:.1f}x fewer multiply-adds")
assert round(ssd[0] / 1e6, 1) == 14.8 and round(full.total_params / 1e6, 1) == 4.3
assert round(full.total_macs / 1e9, 1) == 0.8 and round(lite[0] / 1e6, 1) == 2.1

# %% [markdown]
r"""
Five of the paper's six numbers come out; the sixth, SSDLite's 0.35B multiply-adds, is twice
what its own layers cost (the errata page discusses it). The course's detector itself keeps
torchvision's layout of 6 boxes in every map.

## 16.7 Training

The detector trains on the same loop as the classifiers (`fit`, checkpoints, resume), with
the loss above and, after each epoch, the validation scenes' mAP@0.5 (16.8). The cell runs
`run_training` with `task="detect"`, exactly as `tinymbv2 train --task detect --dataset
mnist-scenes` would. A detection config starts from the detector's own recipe
(`TASK_DEFAULTS["detect"]`: smaller batches and a lower rate than a classifier's, because
SSD's loss is noisier); this cell keeps its batches, rate and weight decay but trains on the
2,000 scenes of 16.1 for 8 epochs, to fit the chapter's time. The command line's default
trains on many more scenes (printed below); what it reaches, and in how long, is measured on
the benchmarks page (`docs/benchmarks.md`).
"""

# %%
import tempfile
import time
from tinymbv2.train import TrainConfig, load_trained, run_training

config = TrainConfig(task="detect", dataset="mnist-scenes", image_size=size, width=0.5,
                     train_scenes=len(scenes.train), epochs=1 if TINYMBV2_FAST else 8,
                     out=tempfile.mkdtemp(prefix="ch16_"))
from tinymbv2.train.config import TASK_DEFAULTS

print("the detector's default recipe:", TASK_DEFAULTS["detect"])
start = time.perf_counter()
metrics = run_training(config, progress=False)
print(f"trained {config.epochs} epochs of {config.train_scenes} scenes in "
      f"{time.perf_counter() - start:.0f} s")

# %% [markdown]
r"""
## 16.8 Evaluation: mean average precision

A detection is right if its class is right and its box overlaps a true box of that class by
at least the IoU threshold (each true box can be found once). Sorting a class's detections
by score gives a precision-recall curve; its area (COCO's 101-point interpolation) is the
class's average precision, and the mean over classes is the **mAP**. mAP@0.5 asks for IoU
0.5 (PASCAL VOC's measure); COCO's mAP averages thresholds 0.5 to 0.95, rewarding tight boxes.
`tinymbv2.evaluation.mean_average_precision` gives the same numbers as pycocotools.
"""

# %%
print(f"test scenes: mAP@0.5 {metrics['test_map_50']:.3f}, mAP@0.75 {metrics['test_map_75']:.3f}, "
      f"COCO mAP@[.5:.95] {metrics['test_map']:.3f}")
print("AP@0.5 per digit: " + ", ".join(f"{d} {ap:.2f}" for d, ap in metrics["per_class_ap_50"].items()))
worst = min(metrics["per_class_ap_50"], key=metrics["per_class_ap_50"].get)
print(f"hardest digit: {worst}")
if not TINYMBV2_FAST:
    assert metrics["test_map_50"] > 0.5 and metrics["test_map"] < metrics["test_map_50"]
    print("checked: mAP@0.5 above 0.5 after this short run, and the stricter COCO mAP below it")

# %%
from tinymbv2.evaluation import detect

test = scenes.test
detector, _ = load_trained(f"{config.out}/model.npz")       # the run's final weights
found = detect(detector, normalize(test.images[:8]))
fig, axes = plt.subplots(2, 4, figsize=(13, 6.8))
for i, ax in enumerate(axes.ravel()):
    truth = {"boxes": test.boxes[i], "labels": test.labels[i]}
    ax.imshow(np.asarray(draw_detections(test.images[i], found[i], scenes.class_names, 0.5, truth, scale=2)))
    ax.axis("off")
fig.suptitle("test scenes: detections scoring 0.5 or more, true boxes in grey")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 16.1

Write `iou(a, b)`: the intersection over union of two boxes `(x1, y1, x2, y2)`.
"""

# %%
from tinymbv2.exercises import check_box_iou

def iou(a, b):
    """IoU of boxes a and b, each (x1, y1, x2, y2); a float in [0, 1]."""
    raise NotImplementedError("your code here")

check_box_iou(iou)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def iou(a, b):
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))     # the overlap, 0 if none
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
```

</details>

### Exercise 16.2

Write `encode(box, default_box)`: the four offsets $(t_x, t_y, t_w, t_h)$ of 16.4, weights
(10, 10, 5, 5).
"""

# %%
from tinymbv2.exercises import check_encode_box

def encode(box, default_box):
    """SSD's offsets of box from default_box, both (x1, y1, x2, y2): [tx, ty, tw, th]."""
    raise NotImplementedError("your code here")

check_encode_box(encode)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def encode(box, default_box):
    gw, gh = box[2] - box[0], box[3] - box[1]
    dw, dh = default_box[2] - default_box[0], default_box[3] - default_box[1]
    gx, gy = box[0] + gw / 2, box[1] + gh / 2
    dx, dy = default_box[0] + dw / 2, default_box[1] + dh / 2
    return [10 * (gx - dx) / dw, 10 * (gy - dy) / dh, 5 * np.log(gw / dw), 5 * np.log(gh / dh)]
```

</details>

### Exercise 16.3

Write `hard_negatives(losses, positive, ratio)`: for one image's default boxes, a boolean
mask of the `ratio * positive.sum()` boxes with the highest loss among those that are not
positive.
"""

# %%
from tinymbv2.exercises import check_hard_negatives

def hard_negatives(losses, positive, ratio=3):
    """losses (A,), positive (A,) bool: the hard negatives kept, an (A,) bool mask."""
    raise NotImplementedError("your code here")

check_hard_negatives(hard_negatives)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def hard_negatives(losses, positive, ratio=3):
    candidates = np.where(positive, -np.inf, losses)       # a positive is never a negative
    keep = np.zeros_like(positive)
    keep[np.argsort(-candidates, kind="stable")[: ratio * positive.sum()]] = True
    return keep
```

torchvision ranks the boxes the same way (`sort`, then the rank of each box) and keeps those
ranked below the count.

</details>
"""
