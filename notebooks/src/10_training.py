# %% [markdown]
r"""
# 10. Training MobileNetV2 on MNIST

Everything comes together: the model (chapter 5) with its initialisation (6), cross-entropy
(7), SGD with momentum and a cosine schedule (8), and the augmented mnist5k data (9).

**A network for $28\times28$ images.** MobileNetV2 divides the resolution by 32 (five stride-2
layers): a $28\times28$ digit would be $1\times1$ after the third stage. The common small-image
variant (`small_input=True`, used for CIFAR) sets the stride of the stem and of the first
24-channel stage to 1, so the network divides by 8 and ends on a $4\times4$ map. With one
input channel and width 0.35 the model has about 0.4M parameters.

**The training step** (`tinymbv2.train.fit` runs it; read `tinymbv2/train/trainer.py`, it is short):

```text
for each mini-batch:  logits = model(x);  loss = cross_entropy(logits, y)
                      optimizer.zero_grad();  loss.backward();  optimizer.step()
after each epoch:     scheduler.step();  evaluate on the validation split;  keep the best weights
```

`fit` runs these steps on `tinymbv2.fuse(model)`, the model's fused view (chapter 14): the same
parameters and the same numbers, computed with fewer, faster ops. The optimizer and the
checkpoints hold the plain model's parameters, which are the view's. `fit(..., fuse=False)`
trains the plain model, layer by layer, to step through it in a debugger.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt
import torch
import torchvision

import tinymbv2
from tinymbv2 import Tensor, functional as F, optim
from tinymbv2.data import (Compose, DataLoader, Normalize, RandomRotation, RandomShift, Split,
                           load_dataset)
from tinymbv2.models import from_torchvision, mobilenet_v2, summary
from tinymbv2.evaluation import confusion_matrix, evaluate, precision_recall
from tinymbv2.train import diagnose, fit

ds = load_dataset("mnist5k")
n_train = 512 if TINYMBV2_FAST else len(ds.train)
epochs = 3 if TINYMBV2_FAST else 10
batch_size = 32 if TINYMBV2_FAST else 64      # more, smaller steps when the data is small
norm = Normalize.from_data(ds.train.images)
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]
train_images, train_labels = ds.train.images[subset], ds.train.labels[subset]
keep = np.linspace(0, len(ds.val) - 1, 200 if TINYMBV2_FAST else len(ds.val)).astype(int)  # every class
val = Split(norm(ds.val.images[keep]), ds.val.labels[keep])   # normalised once, like the test split
keep_test = np.linspace(0, len(ds.test) - 1, 500 if TINYMBV2_FAST else len(ds.test)).astype(int)
test = Split(norm(ds.test.images[keep_test]), ds.test.labels[keep_test])

model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
s = summary(model, input_size=(1, 28, 28))
print(f"parameters {s.total_params:,}   multiply-adds per image {s.total_macs / 1e6:.1f}M   "
      f"final feature map {[r.output_shape for r in s.rows if r.name == 'features.18.2'][0]}")
print(f"training on {n_train} images for {epochs} epochs")

# %% [markdown]
r"""
## 10.1 One training step, checked against PyTorch

Before spending minutes on training, one step is compared with torchvision. We patch a
torchvision `mobilenet_v2` into the same small-input, one-channel variant, mirror it with
`from_torchvision` (same weights), take one SGD step (momentum and weight decay included) on
the same batch in float64 on both sides, and compare every weight afterwards.
"""

# %%
torch.manual_seed(0)
tv = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
tv.features[0][0] = torch.nn.Conv2d(1, tv.features[0][0].out_channels, 3, 1, 1, bias=False)
block = tv.features[2]                                   # the first 24-channel block
block.conv[1][0].stride, block.stride = (1, 1), 1
# torchvision fixed use_res_connect when it built the block with stride 2: recompute it
block.use_res_connect = block.conv[0][0].in_channels == block.conv[-1].num_features
tv.classifier[0].p = 0.0                                 # no dropout: masks cannot match
twin = from_torchvision(tv)                              # same architecture, same weights
tv.double().train(); twin.double().train()
xb, yb = norm(train_images[:32]).astype(np.float64), train_labels[:32]

opt = optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
loss = F.cross_entropy(twin(Tensor(xb)), yb); opt.zero_grad(); loss.backward(); opt.step()
topt = torch.optim.SGD(tv.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
tloss = torch.nn.functional.cross_entropy(tv(torch.from_numpy(xb)), torch.from_numpy(yb))
topt.zero_grad(); tloss.backward(); topt.step()
after = twin.state_dict()
err = max(np.abs(after[k] - v.detach().numpy()).max() for k, v in tv.state_dict().items()
          if v.dtype.is_floating_point)
print(f"loss: tinymbv2 {loss.item():.10f}  torchvision {tloss.item():.10f}")
print(f"after one step, largest difference over all {len(after)} weights and buffers: {err:.1e}")

# %% [markdown]
r"""
## 10.2 Training

Augmentation: small rotations and shifts, then normalisation with the training statistics.
SGD with momentum 0.9, weight decay $4\cdot10^{-5}$ (the paper's), learning rate 0.05 annealed
to 0 with a cosine over the run.
"""

# %%
tinymbv2.manual_seed(0)
model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
aug = Compose([RandomRotation(10), RandomShift(2), norm])
loader = DataLoader(train_images, train_labels, batch_size=batch_size, seed=0, transform=aug)
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
history = fit(model, opt, loader, val_split=val, epochs=epochs, scheduler=sched, progress=False)

# %%
def plot_history(h, title):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ep = h["epoch"]
    a1.plot(ep, h["train_loss"], "o-", label="train"); a1.plot(ep, h["val_loss"], "s-", label="validation")
    a2.plot(ep, h["train_acc"], "o-", label="train"); a2.plot(ep, h["val_acc"], "s-", label="validation")
    a1.set_title("loss"); a2.set_title("accuracy")
    for a in (a1, a2):
        a.set_xlabel("epoch"); a.grid(alpha=0.3); a.legend()
    fig.suptitle(title); plt.tight_layout(); plt.show()

plot_history(history, "MobileNetV2 (width 0.35, small input) on mnist5k")
print(diagnose(history, chance=0.1))

# %% [markdown]
r"""
## 10.3 Test accuracy, BatchNorm statistics and the confusion matrix

We reload the weights of the best validation epoch and evaluate **once** on the test split.

One more step first. In eval mode every BatchNorm uses its *running* statistics, an
exponential average over roughly the last $1/m = 10$ training batches (chapter 3), collected
while the weights were still changing. After a long run the weights change slowly and the
average is accurate; after a short one it lags behind the final weights, and eval-mode
accuracy can be far below training accuracy. The cure is cheap: with the weights fixed, run
the training images through the network once more in training mode with a *cumulative*
average (`momentum=None`), which re-estimates every running mean and variance for the final
weights ("precise BatchNorm"). No gradient, no weight changes.

The confusion matrix $C_{ij}$ counts test images of class $i$ predicted as $j$: the diagonal is
right, everything else shows *which* digits are confused.
"""

# %%
import inspect
from tinymbv2.train import recalibrate_batchnorm
print(inspect.getsource(recalibrate_batchnorm))  # read it: a dozen lines

model.load_state_dict(history["best_state"])
before = evaluate(model, test.images, test.labels)["accuracy"]
recalibrate_batchnorm(model, norm(train_images))
result = evaluate(model, test.images, test.labels)
cm = confusion_matrix(result["predictions"], test.labels, 10)
precision, recall = precision_recall(cm)
print(f"best epoch {history['best_epoch']}: validation {history['best_val_acc']:.2%}")
print(f"test accuracy with the running statistics of training: {before:.2%}; "
      f"after recalibrating BatchNorm: {result['accuracy']:.2%}")
print("recall per class   :", np.round(recall, 3))
print("precision per class:", np.round(precision, 3))

fig, ax = plt.subplots(figsize=(5.2, 4.4))
ax.imshow(cm, cmap="Blues")
for i in range(10):
    for j in range(10):
        ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7, color="white" if cm[i, j] > cm.max() / 2 else "black")
ax.set_xticks(range(10)); ax.set_yticks(range(10)); ax.set_xlabel("predicted"); ax.set_ylabel("true")
ax.set_title(f"test confusion matrix, accuracy {result['accuracy']:.1%}"); plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 10.4 Reading the curves: over-fitting and under-fitting

* **Under-fitting**: the model does not even fit the training data (training accuracy stays
  low). Train longer, raise the learning rate, or give the model more capacity.
* **Over-fitting**: training keeps improving while validation stalls or its loss rises; a large
  train/validation gap. More data, augmentation, weight decay, or stop at the best epoch.

We provoke both: 100 training images, no augmentation, many epochs (over-fitting); and a
learning rate 500 times too small (under-fitting). `diagnose` reads each history.
"""

# %%
def run(images, labels, lr, n_epochs, transform):
    tinymbv2.manual_seed(0)
    m = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    o = optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    dl = DataLoader(images, labels, batch_size=25, seed=0, transform=transform)
    return fit(m, o, dl, val_split=val, epochs=n_epochs, progress=False, log=None)

few = 100
pick = np.linspace(0, len(ds.train) - 1, few).astype(int)   # 10 per class (the split is sorted by class)
over = run(ds.train.images[pick], ds.train.labels[pick], 0.05, 20 if TINYMBV2_FAST else 40, norm)
under = run(train_images[:256] if TINYMBV2_FAST else train_images,
            train_labels[:256] if TINYMBV2_FAST else train_labels, 1e-4, 1 if TINYMBV2_FAST else 3, aug)
plot_history(over, f"{few} training images, no augmentation")
print("over-fitting run :", diagnose(over, chance=0.1))
print("under-fitting run:", diagnose(under, chance=0.1))

# %% [markdown]
r"""
## Exercises

**1.** Train the same model without augmentation (`transform=norm`). Does the validation
accuracy change? Does the gap between training and validation accuracy?

<details><summary>Solution</summary>

```python
plain = run(train_images, train_labels, 0.05, epochs, norm)
print(plain["val_acc"][-1], plain["train_acc"][-1] - plain["val_acc"][-1])
```

Without augmentation the training accuracy is higher and the validation accuracy usually
a little lower: the gap widens, the signature of over-fitting.

</details>

**2.** Which pair of digits is confused most often? Show a few of those test images.

<details><summary>Solution</summary>

```python
off = cm - np.diag(np.diag(cm))
i, j = np.unravel_index(off.argmax(), off.shape)
wrong = np.flatnonzero((test.labels == i) & (result["predictions"] == j))[:6]
fig, axes = plt.subplots(1, len(wrong), figsize=(2 * len(wrong), 2))
for ax, k in zip(np.atleast_1d(axes), wrong):
    ax.imshow(test.images[k, 0], cmap="gray_r"); ax.axis("off")
fig.suptitle(f"true {i}, predicted {j}"); plt.show()
```

</details>
"""
