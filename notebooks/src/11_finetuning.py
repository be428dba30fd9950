# %% [markdown]
r"""
# 11. Fine-tuning and transfer learning

A network trained on one dataset has learned features (edges, strokes, loops) that are useful
for related data. **Transfer learning** reuses them: keep the trained weights, replace the
classifier by a fresh one for the new classes, and train on the new data, either

* the **head only** (the backbone frozen: a fixed feature extractor; cheap, needs few labels), or
* **everything** (fine-tuning; usually with a smaller learning rate, so the good features are
  adjusted rather than destroyed).

This matters most when the new dataset is small. Here: pretrain a MobileNetV2 on mnist5k
($28\times28$), then learn the scikit-learn digits ($8\times8$, scanned differently, upsampled
to $28\times28$) from only **ten labelled images per class**, and compare with training
from scratch on the same hundred images.

A subtlety with frozen BatchNorm layers: `model.train()` switches them to training mode, where
they would normalise with the new batches' statistics and overwrite their running averages.
A frozen backbone should keep the statistics of the pretraining data, so after every
`model.train()` we put the frozen BatchNorms back into eval mode (`set_frozen_bn_eval`).
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import tempfile
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F, optim
from tinymbv2.data import Compose, DataLoader, Normalize, RandomShift, Resize, load_dataset
from tinymbv2.models import mobilenet_v2
from tinymbv2.evaluation import evaluate
from tinymbv2.nn import BatchNorm2d
from tinymbv2.train import fit, load_checkpoint, recalibrate_batchnorm, save_checkpoint
from tinymbv2.train.finetune import count_trainable, freeze_backbone, replace_classifier, set_frozen_bn_eval

mnist, digits = load_dataset("mnist5k"), load_dataset("digits")
norm = Normalize.from_data(mnist.train.images)

def build():
    return mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)

# %% [markdown]
r"""
## 11.1 Pretraining on mnist5k, saved as a checkpoint

The recipe of chapter 10 (shifts, SGD, one-cycle), for fewer epochs: the point here is a
backbone whose features are good, not the last tenth of a percent. At full size it trains on
all 3,500 training images for 6 epochs; in fast mode on 768 for 2 (the cell prints which).
"""

# %%
n_pre = 768 if TINYMBV2_FAST else len(mnist.train)
pre_epochs = 2 if TINYMBV2_FAST else 6
tinymbv2.manual_seed(0)
pretrained = build()
print(f"pretraining on {n_pre} images for {pre_epochs} epochs")
subset = np.random.default_rng(0).permutation(len(mnist.train))[:n_pre]
loader = DataLoader(mnist.train.images[subset], mnist.train.labels[subset], batch_size=32 if TINYMBV2_FAST else 64,
                    seed=0, transform=Compose([RandomShift(2), norm]))
opt = optim.SGD(pretrained.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=pre_epochs * len(loader))
fit(pretrained, opt, loader, epochs=pre_epochs, scheduler=sched, scheduler_interval="batch", progress=False)
recalibrate_batchnorm(pretrained, norm(mnist.train.images[subset]))  # chapter 10: precise BatchNorm

pre_acc = evaluate(pretrained, norm(mnist.test.images), mnist.test.labels)["accuracy"]
print(f"mnist5k test accuracy of the pretrained model: {pre_acc:.1%}")
if not TINYMBV2_FAST:
    assert pre_acc > 0.93, pre_acc
    print("checked (full size): the pretrained model reads MNIST digits well (above 93%)")

checkpoint = os.path.join(tempfile.mkdtemp(), "mnist5k.npz")
save_checkpoint(checkpoint, pretrained, opt, sched, epoch=pre_epochs, config={"width": 0.35})
print("saved", checkpoint, f"({os.path.getsize(checkpoint) / 1e6:.1f} MB)")

# %% [markdown]
r"""
## 11.2 The new task: 8x8 digits, ten labels per class

The digits are upsampled to $28\times28$ (bilinear) and normalised with the *MNIST* statistics:
the pretrained network expects its inputs to look like what it was trained on.
"""

# %%
def prepare(split):
    return norm(Resize(28)(split.images))

per_class = 10
few = np.concatenate([np.flatnonzero(digits.train.labels == c)[:per_class] for c in range(10)])
x_few, y_few = prepare(digits.train)[few], digits.train.labels[few]
keep = np.linspace(0, len(digits.val) - 1, 120 if TINYMBV2_FAST else len(digits.val)).astype(int)
x_val, y_val = prepare(digits.val)[keep], digits.val.labels[keep]
x_test, y_test = prepare(digits.test), digits.test.labels

fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
for c in range(10):
    axes[0, c].imshow(digits.train.images[few[c * per_class], 0], cmap="gray_r"); axes[0, c].axis("off")
    axes[1, c].imshow(x_few[c * per_class, 0], cmap="gray_r"); axes[1, c].axis("off")
axes[0, 0].set_title("8x8 original", fontsize=8, loc="left"); axes[1, 0].set_title("upsampled to 28x28", fontsize=8, loc="left")
plt.show()
print(f"{len(y_few)} training images, {len(y_val)} validation, {len(y_test)} test")

# %% [markdown]
r"""
## 11.3 Three ways to learn from a hundred images

All three get the same loop, the same augmentation (shifts of up to 2 pixels), the same number
of epochs and a learning rate that suits them: 0.05 from scratch and for the new head alone,
0.01 when fine-tuning everything (small steps, so the pretrained features are adjusted rather
than destroyed). The loop is written out (rather than calling `fit`) to show where the frozen
BatchNorms are put back into eval mode. (`fit` does the same when given
`train_mode=lambda m: set_frozen_bn_eval(m.train())`; so does `tinymbv2 finetune`.)

A fair comparison needs one more thing. With a hundred images an epoch is four steps, and the
BatchNorm running averages (chapter 10) lag far behind weights that change this fast: in eval
mode a model trained from scratch would look much worse than it is. So before each evaluation,
a model whose BatchNorms train gets its running statistics re-estimated on its training images
(`recalibrate_batchnorm`, chapter 10). The frozen BatchNorms of the head-only model keep the
statistics of the pretraining data: that is what freezing means.
"""

# %%
def train(model, params, lr, epochs):
    opt = optim.SGD(params, lr=lr, momentum=0.9)
    loader = DataLoader(x_few, y_few, batch_size=25, seed=0, transform=RandomShift(2))
    bn_trains = any(m.weight.requires_grad for m in model.modules() if isinstance(m, BatchNorm2d))
    curve = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)            # a new draw of shifts each epoch
        model.train()
        set_frozen_bn_eval(model)          # frozen layers keep their pretraining statistics
        for xb, yb in loader:
            loss = F.cross_entropy(model(Tensor(xb)), yb)
            opt.zero_grad(); loss.backward(); opt.step()
        if bn_trains:
            recalibrate_batchnorm(model, x_few)
        curve.append(evaluate(model, x_val, y_val)["accuracy"])
    return curve

epochs = 6 if TINYMBV2_FAST else 30
results = {}

tinymbv2.manual_seed(1)
scratch = build()
results["from scratch"] = (scratch, train(scratch, scratch.parameters(), 0.05, epochs))

tinymbv2.manual_seed(1)
head = build(); load_checkpoint(checkpoint, head)
replace_classifier(head, 10)
trainable = freeze_backbone(head, train_last_blocks=0)
print(f"head only: {count_trainable(head):,} of {sum(p.size for p in head.parameters()):,} parameters train")
results["pretrained, head only"] = (head, train(head, trainable, 0.05, epochs))

tinymbv2.manual_seed(1)
full = build(); load_checkpoint(checkpoint, full)
replace_classifier(full, 10)
results["pretrained, fine-tune all"] = (full, train(full, full.parameters(), 0.01, epochs))

fig, ax = plt.subplots(figsize=(7, 3.8))
test_acc = {}
for name, (model, curve) in results.items():
    test_acc[name] = evaluate(model, x_test, y_test)["accuracy"]
    ax.plot(range(1, epochs + 1), curve, "o-", ms=3, label=name)
    print(f"{name:26s} validation {curve[-1]:.1%}   test {test_acc[name]:.1%}")
ax.set_xlabel("epoch"); ax.set_ylabel("validation accuracy"); ax.grid(alpha=0.3); ax.legend()
ax.set_title("digits, 10 labelled images per class"); plt.tight_layout(); plt.show()

if not TINYMBV2_FAST:
    scratch_acc, full_acc = test_acc["from scratch"], test_acc["pretrained, fine-tune all"]
    assert scratch_acc > 0.5, "the from-scratch baseline should learn (chance is 10%)"
    assert full_acc > scratch_acc + 0.05, "fine-tuning should beat training from scratch"
    print("checked (full size): from scratch learns (above 50%); fine-tuning everything beats it "
          "by more than 5 points")

# %% [markdown]
r"""
What the full-size run shows:

* **From scratch** the network learns: far above chance, from a hundred images. It is a real
  baseline, not a straw man (the cell checks that it scores above 50%).
* **Fine-tuning everything** from the MNIST checkpoint beats it clearly, with the same images,
  epochs and loop (the cell checks a margin of more than 5 points): the pretrained strokes and
  shapes are a better start than random weights.
* **The head alone** is the least predictable of the three. It can only reuse the features the
  pretraining happened to learn, and these digits are not MNIST digits: scanned at $8\times8$
  and upsampled, they are blurred and drawn differently (section 11.2 shows them). A linear
  classifier on frozen features cannot adapt those features; fine-tuning can. Where the head
  alone lands against the from-scratch model changes with the pretraining run (another order
  of the MNIST images is enough to move it below), so the chapter claims no rank for it: read
  its line in the output above. Freezing is the right call when the new data looks like the
  old, or when the labels are too few to train more; otherwise let the backbone move, gently.
"""

# %% [markdown]
r"""
## 11.4 Checked against PyTorch: what freezing does to one step

Freezing means: no gradient for the backbone, so the optimizer leaves it untouched, and
(with the BatchNorms in eval mode) not even the running statistics move. We take one SGD
step with a frozen backbone in tinymbv2 and in a torchvision copy with the same weights
(`requires_grad_(False)` on `features`, `features.eval()`), and compare all weights after it.
"""

# %%
import torch                 # only to compare, and imported after tinymbv2
import torchvision
from tinymbv2.models import to_torch_state_dict

twin = build(); load_checkpoint(checkpoint, twin); replace_classifier(twin, 10)
tv = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
tv.features[0][0] = torch.nn.Conv2d(1, tv.features[0][0].out_channels, 3, 1, 1, bias=False)
block = tv.features[2]                                   # the first 24-channel block
block.conv[1][0].stride, block.stride = (1, 1), 1
# torchvision fixed use_res_connect when it built the block with stride 2: recompute it
block.use_res_connect = block.conv[0][0].in_channels == block.conv[-1].num_features
tv.load_state_dict(to_torch_state_dict(twin))
before = twin.state_dict()

params = freeze_backbone(twin); twin.train(); set_frozen_bn_eval(twin); twin.classifier[0].eval()
opt = optim.SGD(params, lr=0.1, momentum=0.9)
loss = F.cross_entropy(twin(Tensor(x_few[:32])), y_few[:32]); opt.zero_grad(); loss.backward(); opt.step()

tv.features.requires_grad_(False); tv.train(); tv.features.eval(); tv.classifier[0].eval()
topt = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
tloss = torch.nn.functional.cross_entropy(tv(torch.from_numpy(x_few[:32])), torch.from_numpy(y_few[:32]))
topt.zero_grad(); tloss.backward(); topt.step()

after = twin.state_dict()
moved = [k for k in after if not np.array_equal(after[k], before[k])]
err = max(np.abs(after[k] - v.numpy()).max() for k, v in tv.state_dict().items())
print("entries changed by the step:", moved)
print(f"max |tinymbv2 - torchvision| over all weights and buffers after the step: {err:.1e}")
assert moved == ["classifier.1.weight", "classifier.1.bias"] and err < 1e-5, (moved, err)

# %% [markdown]
r"""
## Exercises

### Exercise 11.1: freezing

Write `freeze(model, train_last_blocks)`: every parameter of `model.features` stops training
(`requires_grad = False`) except those in its last `train_last_blocks` entries; everything else
(the classifier) trains; return the list of the parameters that still train, for the optimizer.
The check calls it several times on the same model, as a learner trying several values would:
a model frozen once must be able to train again.
"""

# %%
from tinymbv2.exercises import check_freeze

def freeze(model, train_last_blocks):
    """Freeze model.features but its last train_last_blocks entries; the trainable parameters."""
    raise NotImplementedError("your code here")

check_freeze(freeze)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def freeze(model, train_last_blocks):
    model.requires_grad_(True)                 # undo any earlier freezing first
    blocks = list(model.features)
    for block in blocks[:len(blocks) - train_last_blocks]:
        block.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]
```

This is `freeze_backbone`. Without the first line, a call with a larger `train_last_blocks`
after a smaller one would leave blocks frozen that should train.

</details>
"""

# %% [markdown]
r"""
### Exercise 11.2: frozen BatchNorms stay in eval mode

Write `frozen_bn_eval(model)`, called right after `model.train()`: it puts every `BatchNorm2d`
whose weight is frozen into eval mode (so it keeps the pretraining statistics), and changes
nothing else.
"""

# %%
from tinymbv2.exercises import check_frozen_bn_eval

def frozen_bn_eval(model):
    """Put the frozen BatchNorm2d layers of model (after model.train()) into eval mode."""
    raise NotImplementedError("your code here")

check_frozen_bn_eval(frozen_bn_eval)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def frozen_bn_eval(model):
    for m in model.modules():
        if isinstance(m, BatchNorm2d) and not m.weight.requires_grad:
            m.eval()
```

`model.eval()` would be wrong: the trainable BatchNorms must keep normalising with the batch,
and the Dropout before the classifier must keep dropping.

</details>
"""

# %% [markdown]
r"""
### Exercise 11.3: a smaller learning rate for the pretrained part

When everything is fine-tuned, the new head starts from random weights and needs large steps,
while the pretrained backbone needs small ones (large steps would destroy what it learned). An
optimizer takes **parameter groups**, each with its own options:
`optim.SGD([{"params": [...], "lr": a}, {"params": [...], "lr": b}], lr=..., momentum=0.9)`.
Write `finetune_optimizer(model, backbone_lr, head_lr)`: SGD with momentum 0.9, the parameters
of `model.classifier` at `head_lr`, all the others at `backbone_lr`, each in exactly one group.
"""

# %%
from tinymbv2.exercises import check_finetune_optimizer

def finetune_optimizer(model, backbone_lr, head_lr):
    """optim.SGD (momentum 0.9): model.classifier at head_lr, every other parameter at backbone_lr."""
    raise NotImplementedError("your code here")

check_finetune_optimizer(finetune_optimizer)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def finetune_optimizer(model, backbone_lr, head_lr):
    head = list(model.classifier.parameters())
    in_head = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in in_head]
    return optim.SGD([{"params": backbone, "lr": backbone_lr},
                      {"params": head, "lr": head_lr}], lr=head_lr, momentum=0.9)
```

Parameters are compared by identity (`id`): two different weights may hold equal values.
Try it in section 11.3's loop in place of the single learning rate of "fine-tune all".

</details>
"""
