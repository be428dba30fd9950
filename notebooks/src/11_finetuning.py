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
import torch

import tinymbv2
from tinymbv2 import Tensor, functional as F, optim
from tinymbv2.data import Compose, DataLoader, Normalize, RandomRotation, RandomShift, Resize, load_dataset
from tinymbv2.models import mobilenet_v2
from tinymbv2.evaluation import evaluate
from tinymbv2.train import fit, load_checkpoint, save_checkpoint
from tinymbv2.train.finetune import count_trainable, freeze_backbone, replace_classifier, set_frozen_bn_eval

mnist, digits = load_dataset("mnist5k"), load_dataset("digits")
norm = Normalize.from_data(mnist.train.images)

def build():
    return mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)

# %% [markdown]
r"""
## 11.1 Pretraining on mnist5k, saved as a checkpoint
"""

# %%
n_pre = 768 if TINYMBV2_FAST else len(mnist.train)
pre_epochs = 2 if TINYMBV2_FAST else 6
tinymbv2.manual_seed(0)
pretrained = build()
subset = np.random.default_rng(0).permutation(len(mnist.train))[:n_pre]
loader = DataLoader(mnist.train.images[subset], mnist.train.labels[subset], batch_size=32 if TINYMBV2_FAST else 64, seed=0,
                    transform=Compose([RandomRotation(10), RandomShift(2), norm]))
opt = optim.SGD(pretrained.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=pre_epochs)
fit(pretrained, opt, loader, epochs=pre_epochs, scheduler=sched, progress=False)

from tinymbv2.train import recalibrate_batchnorm  # one training-mode pass, cumulative BN averages

recalibrate_batchnorm(pretrained, norm(mnist.train.images[subset]))
print(f"mnist5k test accuracy of the pretrained model: "
      f"{evaluate(pretrained, norm(mnist.test.images), mnist.test.labels)['accuracy']:.1%}")

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

The loop is written out (rather than calling `fit`) to show where the frozen BatchNorms are
put back into eval mode. (`fit` does the same when given
`train_mode=lambda m: set_frozen_bn_eval(m.train())`; so does `tinymbv2 finetune`.)
"""

# %%
def train(model, params, lr, epochs):
    opt = optim.SGD(params, lr=lr, momentum=0.9)
    loader = DataLoader(x_few, y_few, batch_size=25, seed=0)
    curve = []
    for epoch in range(epochs):
        model.train()
        set_frozen_bn_eval(model)          # frozen layers keep their pretraining statistics
        for xb, yb in loader:
            loss = F.cross_entropy(model(Tensor(xb)), yb)
            opt.zero_grad(); loss.backward(); opt.step()
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
for name, (model, curve) in results.items():
    ax.plot(range(1, epochs + 1), curve, "o-", ms=3, label=name)
    print(f"{name:26s} validation {curve[-1]:.1%}   test {evaluate(model, x_test, y_test)['accuracy']:.1%}")
ax.set_xlabel("epoch"); ax.set_ylabel("validation accuracy"); ax.grid(alpha=0.3); ax.legend()
ax.set_title("digits, 10 labelled images per class"); plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 11.4 Checked against PyTorch: what freezing does to one step

Freezing means: no gradient for the backbone, so the optimizer leaves it untouched, and
(with the BatchNorms in eval mode) not even the running statistics move. We take one SGD
step with a frozen backbone in tinymbv2 and in a torchvision copy with the same weights
(`requires_grad_(False)` on `features`, `features.eval()`), and compare all weights after it.
"""

# %%
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

# %% [markdown]
r"""
## Exercises

**1.** Unfreeze the last three entries of `features` (`freeze_backbone(model, train_last_blocks=3)`)
and train as above. Where does it land between "head only" and "fine-tune all"?

<details><summary>Solution</summary>

```python
tinymbv2.manual_seed(1)
mid = build(); load_checkpoint(checkpoint, mid); replace_classifier(mid, 10)
curve = train(mid, freeze_backbone(mid, train_last_blocks=3), 0.02, epochs)
print(curve[-1], count_trainable(mid))
```

</details>

**2.** Forget `set_frozen_bn_eval` in the head-only run. What happens to the frozen
backbone's running statistics, and to the validation accuracy?

<details><summary>Solution</summary>

The frozen BatchNorms run in training mode: they normalise with each small batch's statistics
and move their running averages towards the digits' statistics, although their weights do
not train. At evaluation the backbone then uses statistics it was never trained with; the
accuracy is usually lower and noisier.

</details>
"""
