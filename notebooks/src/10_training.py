# %% [markdown]
r"""
# 10. Training MobileNetV2 on MNIST

Everything comes together: the model (chapter 5) with its initialisation (6), cross-entropy
(7), SGD with momentum and a one-cycle schedule (8), and the augmented mnist5k data (9).

**A network for $28\times28$ images.** MobileNetV2 divides the resolution by 32 (five stride-2
layers): a $28\times28$ digit would be $1\times1$ after the third stage. The common small-image
variant (`small_input=True`, used for CIFAR) sets the stride of the stem and of the first
24-channel stage to 1, so the network divides by 8 and ends on a $4\times4$ map. With one
input channel and width 0.35 the model is small (the first cell prints its size).

**The training step** (`tinymbv2.train.fit` runs it; read `tinymbv2/train/trainer.py`, it is short):

```text
for each mini-batch:  logits = model(x);  loss = cross_entropy(logits, y)
                      optimizer.zero_grad();  loss.backward();  optimizer.step()
                      scheduler.step()          (a one-cycle schedule moves every step)
after each epoch:     evaluate on the validation split;  keep the best weights
```

`fit` runs these steps on `tinymbv2.fuse(model)`, the model's fused view (chapter 14): the same
parameters and the same numbers, computed with fewer, faster ops. The optimizer and the
checkpoints hold the plain model's parameters, which are the view's. `fit(..., fuse=False)`
trains the plain model, layer by layer, to step through it in a debugger.

**Sizes.** At full size the chapter trains on all 3,500 training images of mnist5k for 10
epochs, a few minutes on a laptop's CPU; with `TINYMBV2_FAST=1` (what CI runs) it trains on 512
images for 3 epochs, only to check that the code runs. Section 10.6 trains a smaller version of
the recipe (1,000 images, 5 epochs) from five seeds; in fast mode three seeds, 256 images, 2
epochs. The prose describes the full-size run.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F, nn, optim
from tinymbv2.data import Compose, DataLoader, Normalize, RandomShift, Split, load_dataset
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
print(f"training on {n_train} images for {epochs} epochs, batches of {batch_size}; "
      f"validation {len(val)} images, test {len(test)}")

# %% [markdown]
r"""
## 10.1 One training step, checked against PyTorch

Before spending minutes on training, one step is compared with torchvision. We patch a
torchvision `mobilenet_v2` into the same small-input, one-channel variant, mirror it with
`from_torchvision` (same weights), take one SGD step (momentum and weight decay included) on
the same batch in float64 on both sides, and compare every weight afterwards.
"""

# %%
import torch        # only to compare, and imported after tinymbv2
import torchvision

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
assert abs(loss.item() - tloss.item()) < 1e-10 and err < 1e-10, "the step differs from PyTorch's"

# %% [markdown]
r"""
## 10.2 Training

The recipe is the one `make demo` uses (README), for a smaller model and fewer epochs:

* augmentation: random shifts of up to 2 pixels (chapter 9), then normalisation with the
  training statistics;
* SGD with momentum, weight decay $5\cdot10^{-4}$;
* a **one-cycle** schedule (chapter 8), stepped after every batch: the learning rate warms up
  from $0.2/25$ to $0.2$ over the first 30% of the steps while the momentum falls from 0.95 to
  0.85; then the learning rate falls to almost 0 while the momentum rises back to 0.95 (the
  log prints each epoch's starting learning rate). The high middle moves fast across the loss
  surface; the quiet end settles into a minimum.
"""

# %%
tinymbv2.manual_seed(0)
model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
aug = Compose([RandomShift(2), norm])
loader = DataLoader(train_images, train_labels, batch_size=batch_size, seed=0, transform=aug)
opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=epochs * len(loader))
history = fit(model, opt, loader, val_split=val, epochs=epochs, scheduler=sched,
              scheduler_interval="batch", progress=False)
print(f"{sum(history['seconds']):.0f} s of training ({len(loader)} steps per epoch)")

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
verdict = diagnose(history, chance=0.1)
print(verdict)
if not TINYMBV2_FAST:
    assert verdict.startswith("Good fit") and history["val_acc"][-1] > 0.95, verdict
    print("checked (full size): a good fit, validation accuracy above 95%")

# %% [markdown]
r"""
## 10.3 Test accuracy, BatchNorm statistics and the confusion matrix

The printed diagnosis reads the curves (section 10.4 says how); at full size it finds a good
fit: training and validation accuracy end close together, both high, and the validation loss
has not turned up. We reload the weights of the best validation epoch and evaluate **once** on
the test split.

One more step first. In eval mode every BatchNorm uses its *running* statistics, an
exponential average over roughly the last $1/m = 10$ training batches (chapter 3), collected
while the weights were still changing. When the weights change slowly at the end of a run (as
here: the one-cycle schedule ends with a learning rate near 0) the average is accurate; after
a short run, or one that ends with large steps, it lags behind the final weights, and
eval-mode accuracy can be far below training accuracy. The cure is cheap: with the weights
fixed, run the training images through the network once more in training mode with a
*cumulative* average (`momentum=None`), which re-estimates every running mean and variance for
the final weights ("precise BatchNorm"). No gradient, no weight changes. The cell prints the
test accuracy before and after; after this full run the two are close, as they should be.

The confusion matrix $C_{ij}$ counts test images of class $i$ predicted as $j$: the diagonal is
right, everything else shows *which* digits are confused. The full-size model makes few
mistakes, and every class has a recall and a precision above 90% (the cell checks this); the
cell then names the most frequent confusion and shows those images. Often they are digits a
person would hesitate over too.
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
if not TINYMBV2_FAST:
    assert result["accuracy"] > 0.95 and recall.min() > 0.9 and precision.min() > 0.9
    assert abs(result["accuracy"] - before) < 0.02
    print("checked (full size): test accuracy above 95%, every class's recall and precision above "
          "90%; recalibrating BatchNorm changed the accuracy by less than 2 points")

fig, ax = plt.subplots(figsize=(5.2, 4.4))
ax.imshow(cm, cmap="Blues")
for i in range(10):
    for j in range(10):
        ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7, color="white" if cm[i, j] > cm.max() / 2 else "black")
ax.set_xticks(range(10)); ax.set_yticks(range(10)); ax.set_xlabel("predicted"); ax.set_ylabel("true")
ax.set_title(f"test confusion matrix, accuracy {result['accuracy']:.1%}"); plt.tight_layout(); plt.show()

off = cm - np.diag(np.diag(cm))                      # the mistakes only
i, j = np.unravel_index(off.argmax(), off.shape)
wrong = np.flatnonzero((test.labels == i) & (result["predictions"] == j))[:8]
print(f"{cm.sum() - np.trace(cm)} mistakes in {cm.sum()} test images; the most frequent: "
      f"a {i} read as a {j} ({off[i, j]} times)")
fig, axes = plt.subplots(1, len(wrong), figsize=(1.1 * len(wrong), 1.4), squeeze=False)
for ax, k in zip(axes[0], wrong):
    ax.imshow(test.images[k, 0], cmap="gray_r"); ax.axis("off")
fig.suptitle(f"test images of a {i} the model read as a {j}", y=1.05, fontsize=10); plt.show()

# %% [markdown]
r"""
## 10.4 Reading the curves: over-fitting and under-fitting

* **Under-fitting**: the model does not even fit the training data (training accuracy stays
  low). Train longer, raise the learning rate, or give the model more capacity.
* **Over-fitting**: training keeps improving while validation stalls or its loss rises; a large
  train/validation gap. More data, augmentation, weight decay, or stop at the best epoch.

`diagnose` reads a history this way. We provoke both: 100 training images (10 per class), no
augmentation, many epochs at a constant learning rate (over-fitting); and a learning rate of
$10^{-4}$, far too small, for a short run (under-fitting). The cell asserts that `diagnose`
names each one (in both modes). The over-fitting run's plot shows the signature: training
accuracy climbs to nearly 100% while validation stays far below.
"""

# %%
val_small = Split(val.images[::2], val.labels[::2])    # every class still; evaluated every epoch

def run(images, labels, lr, n_epochs, transform):
    tinymbv2.manual_seed(0)
    m = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    o = optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    dl = DataLoader(images, labels, batch_size=25, seed=0, transform=transform)
    return fit(m, o, dl, val_split=val_small, epochs=n_epochs, progress=False, log=None)

few = 100
pick = np.linspace(0, len(ds.train) - 1, few).astype(int)   # 10 per class (the split is sorted by class)
over = run(ds.train.images[pick], ds.train.labels[pick], 0.05, 20 if TINYMBV2_FAST else 30, norm)
n_under = 256 if TINYMBV2_FAST else 1000
under = run(train_images[:n_under], train_labels[:n_under], 1e-4, 1 if TINYMBV2_FAST else 2, aug)
plot_history(over, f"{few} training images, no augmentation")
over_verdict, under_verdict = diagnose(over, chance=0.1), diagnose(under, chance=0.1)
print("over-fitting run :", over_verdict)
print("under-fitting run:", under_verdict)
assert over_verdict.startswith("Over-fitting") and under_verdict.startswith("Under-fitting")
if not TINYMBV2_FAST:
    assert over["train_acc"][-1] > 0.9 and over["val_acc"][-1] < over["train_acc"][-1] - 0.2
    print("checked (full size): the over-fitting run fits its 100 images (above 90%) and "
          "validates more than 20 points lower")

# %% [markdown]
r"""
## 10.5 Against the conventional methods

Is a convolutional network needed for this? The seed article sets MobileNetV2 against the
"traditional" classifiers; here are three, on the pixels flattened into a vector $x$:

* **softmax regression**: $p = \text{softmax}(Wx + b)$ trained with cross-entropy, the
  network of chapter 7 with no hidden layer;
* **linear SVM**: the same scores $Wx + b$ trained with the multi-class hinge loss
  `F.multi_margin_loss`, $\frac1K\sum_{j\ne t}\max(0, 1 - z_t + z_j)$: a sample stops
  counting once its class wins by the margin;
* **k-nearest neighbours** ($k = 3$): no training; a test image takes the majority label of
  the three training images closest in Euclidean distance.

The first two are written with tinymbv2's autograd (a `Linear` layer, a loss, `optim.SGD`
full-batch with weight decay $\lambda = 1/(CN)$, the L2 penalty scikit-learn's $C$ means;
$C = 0.01$ for all four linear models) and checked against scikit-learn's `LogisticRegression` and `LinearSVC`; the third
is a few lines of NumPy, checked against `KNeighborsClassifier`. scikit-learn's SVM differs in
form (one-vs-rest, squared hinge) but is the same kind of model: we compare accuracies, not
weights. Both datasets, the test splits. MobileNetV2's row on mnist5k is the model trained
above (its time is the training's ten epochs). On digits the cell trains the same network
(`small_input=True`, one channel, width 0.35) on the 1,079 training images of $8\times8$
pixels, where it ends on a $1\times1$ map: the one-cycle recipe of 10.2 with a lower peak
learning rate, 0.05, batches of 64, 15 epochs and no random shifts (one pixel is an eighth of
these images, not a twenty-eighth), choices made by a few trials on the validation split; then
the best validation epoch and recalibrated BatchNorm, as in 10.3.
"""

# %%
import time
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

def train_linear(X, y, loss_fn, weight_decay, steps=500):
    """A Linear layer trained full-batch by SGD with momentum; returns it."""
    tinymbv2.manual_seed(0)
    layer = nn.Linear(X.shape[1], 10)
    opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
    for step in range(steps):
        loss = loss_fn(layer(Tensor(X)), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return layer

def knn_predict(X_train, y_train, X, k=3):
    """Majority label of the k nearest training rows (ties: the smallest label, as scikit-learn)."""
    d2 = (X ** 2).sum(1)[:, None] - 2 * X @ X_train.T + (X_train ** 2).sum(1)[None, :]
    nearest = np.argpartition(d2, k, axis=1)[:, :k]
    votes = np.apply_along_axis(np.bincount, 1, y_train[nearest], minlength=10)
    return votes.argmax(1)

def timed(fit):
    start = time.perf_counter()
    out = fit()
    return out, time.perf_counter() - start

digits = load_dataset("digits")
digits_norm = Normalize.from_data(digits.train.images)
baselines = {
    "digits": (digits_norm(digits.train.images), digits.train.labels,
               digits_norm(digits.test.images), digits.test.labels),
    "mnist5k": (norm(train_images), train_labels, test.images, test.labels),
}
rows, agreement = [], {}
C = 0.01    # C = 1 lets the SVMs fit mnist5k's 3,500 images exactly and lose ~4 points
for dataset, (Xtr, ytr, Xte, yte) in baselines.items():
    Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)       # float32, as the layers
    wd = 1.0 / (C * len(Xtr))                   # the L2 penalty scikit-learn's C means
    d = Xtr.shape[1]
    def accuracy(predicted):
        return float((predicted == yte).mean())
    def ours_predict(layer):
        with tinymbv2.no_grad():
            return layer(Tensor(Xte)).data.argmax(1)
    softmax_reg, t = timed(lambda: train_linear(Xtr, ytr, F.cross_entropy, wd))
    rows.append((dataset, "softmax regression (tinymbv2)", accuracy(ours_predict(softmax_reg)), 10 * d + 10, t))
    sk, t = timed(lambda: LogisticRegression(C=C, max_iter=2000).fit(Xtr, ytr))
    rows.append((dataset, "LogisticRegression (sklearn)", accuracy(sk.predict(Xte)), sk.coef_.size + sk.intercept_.size, t))
    svm, t = timed(lambda: train_linear(Xtr, ytr, F.multi_margin_loss, wd))
    rows.append((dataset, "linear SVM, hinge (tinymbv2)", accuracy(ours_predict(svm)), 10 * d + 10, t))
    sk, t = timed(lambda: LinearSVC(C=C, max_iter=20000).fit(Xtr, ytr))
    rows.append((dataset, "LinearSVC (sklearn)", accuracy(sk.predict(Xte)), sk.coef_.size + sk.intercept_.size, t))
    knn, t = timed(lambda: knn_predict(Xtr, ytr, Xte))
    rows.append((dataset, "3-NN (NumPy), time = predicting", accuracy(knn), Xtr.size, t))
    sk, t = timed(lambda: KNeighborsClassifier(3).fit(Xtr, ytr).predict(Xte))
    rows.append((dataset, "KNeighborsClassifier (sklearn)", accuracy(sk), Xtr.size, t))
    agreement[dataset] = float((knn == sk).mean())
rows.append(("mnist5k", "MobileNetV2 0.35 (above)", result["accuracy"], s.total_params, sum(history["seconds"])))

n_digits = 256 if TINYMBV2_FAST else len(digits.train)
digits_x, digits_y = digits_norm(digits.train.images[:n_digits]), digits.train.labels[:n_digits]
digits_epochs = 2 if TINYMBV2_FAST else 15
tinymbv2.manual_seed(0)
digits_model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
digits_loader = DataLoader(digits_x, digits_y, batch_size=64, seed=0)
opt = optim.SGD(digits_model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=digits_epochs * len(digits_loader))
digits_history = fit(digits_model, opt, digits_loader,
                     val_split=Split(digits_norm(digits.val.images), digits.val.labels),
                     epochs=digits_epochs, scheduler=sched, scheduler_interval="batch",
                     progress=False, log=None)
digits_model.load_state_dict(digits_history["best_state"])
recalibrate_batchnorm(digits_model, digits_x)
digits_acc = evaluate(digits_model, *baselines["digits"][2:])["accuracy"]
rows.insert(6, ("digits", f"MobileNetV2 0.35 ({digits_epochs} epochs)", digits_acc,
                summary(digits_model, input_size=(1, 8, 8)).total_params, sum(digits_history["seconds"])))

print(f"{'data':8s} {'method':32s} {'test acc':>8s} {'parameters':>11s} {'train s':>8s}")
for dataset, method, acc, n_params, seconds in rows:
    print(f"{dataset:8s} {method:32s} {acc:8.1%} {n_params:11,} {seconds:8.2f}")
print("3-NN: ours and scikit-learn's predictions agree on", {k: f"{v:.1%}" for k, v in agreement.items()})

acc_of = {(d, m.split(" (")[0]): a for d, m, a, _, _ in rows}
assert min(agreement.values()) > 0.99
print("checked: our 3-NN agrees with scikit-learn's on over 99% of test images")
if not TINYMBV2_FAST:
    for d in baselines:
        assert abs(acc_of[(d, "softmax regression")] - acc_of[(d, "LogisticRegression")]) < 0.02
        assert abs(acc_of[(d, "linear SVM, hinge")] - acc_of[(d, "LinearSVC")]) < 0.03
    print("checked (full size): our softmax regression within 2 points of LogisticRegression, "
          "our SVM within 3 of LinearSVC, on both datasets")
    best_conventional = max(a for (d, m), a in acc_of.items() if d == "mnist5k" and m != "MobileNetV2 0.35")
    assert result["accuracy"] > best_conventional + 0.03
    print(f"checked (full size): on mnist5k MobileNetV2 beats the best conventional method by "
          f"{result['accuracy'] - best_conventional:.1%}")
    linear = ("softmax regression", "LogisticRegression", "linear SVM, hinge", "LinearSVC")
    best_linear = max(acc_of[("digits", m)] for m in linear)
    assert best_linear < digits_acc < acc_of[("digits", "3-NN")]
    print(f"checked (full size): on digits MobileNetV2 ({digits_acc:.1%}) lies between the best "
          f"linear model ({best_linear:.1%}) and 3-NN ({acc_of[('digits', '3-NN')]:.1%})")

# %% [markdown]
r"""
What the table shows. Our softmax regression and SVM land where scikit-learn's do (the
checks above), so the autograd, the losses and SGD make ordinary linear models; scikit-learn
gets there faster on digits' 64 pixels with its dedicated solvers. On digits every method is
above 93%: 64 pixels of a centred digit are nearly linearly separable, and 3-NN, which only
remembers the training set, is best. On mnist5k the linear models stop near 91%: one weight per
pixel and class cannot model strokes that shift by a pixel or two. 3-NN does better, at the
price of keeping all 3,500 training images (its "parameters") and comparing each test image
with every one of them. MobileNetV2 is the most accurate on mnist5k, with fewer numbers than
3-NN stores but fifty times the linear models', and tens of times their training time:
convolutions see the strokes wherever they are, which is what the extra points are.

On digits the network is not worth it. It lands between the linear models and 3-NN (the last
check): an $8\times8$ digit leaves its convolutions little to find (the small-input network
divides by 8, so its last feature map is a single pixel), and 1,079 training images are few
for 408,650 weights; 3-NN needs neither, and costs no training at all. Both rows of
MobileNetV2 are single runs, though: section 10.6 measures how much another seed moves one.
"""

# %% [markdown]
r"""
## 10.6 One run is one draw: the spread over seeds

Every number above comes from one training run, and a run depends on its seed: the initial
weights (`mobilenet_v2(seed=...)`), the order of the batches and the random shifts
(`DataLoader(seed=...)`), the dropout masks (`tinymbv2.manual_seed`). Another seed, same
recipe, same data, gives another network and another test accuracy. Before reading a
difference between two runs as a difference between two methods, we need to know how far
apart two runs of the *same* method land.

So we train the recipe from five seeds. Ten epochs on 3,500 images five times over would take
more than the chapter's whole time budget, so this is a stated smaller version: the first 1,000 of
the training images, 5 epochs, batches of 32 (more steps from fewer images), and a one-cycle
peak of 0.05, lower than 10.2's 0.2, because a short run has few steps in which to come down
from a high peak. Everything else is 10.2's and 10.3's: the shifts, SGD with momentum and
weight decay $5\cdot10^{-4}$, the best validation epoch (on the 250 images of `val_small`),
recalibrated BatchNorm, the 1,000 test images. The data and the test split are fixed; only
the seed changes.
"""

# %%
seeds = [1, 2, 3] if TINYMBV2_FAST else [1, 2, 3, 4, 5]
n_seed = 256 if TINYMBV2_FAST else 1000
seed_epochs = 2 if TINYMBV2_FAST else 5
seed_x, seed_y = train_images[:n_seed], train_labels[:n_seed]
runs = []
for seed in seeds:
    tinymbv2.manual_seed(seed)                                          # the dropout masks
    m = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=seed)
    dl = DataLoader(seed_x, seed_y, batch_size=32, seed=seed, transform=aug)   # order and shifts
    o = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sc = optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=seed_epochs * len(dl))
    h = fit(m, o, dl, val_split=val_small, epochs=seed_epochs, scheduler=sc,
            scheduler_interval="batch", progress=False, log=None)
    m.load_state_dict(h["best_state"])
    recalibrate_batchnorm(m, norm(seed_x))
    h["test_acc"] = evaluate(m, test.images, test.labels)["accuracy"]
    runs.append(h)
    print(f"seed {seed}: best epoch {h['best_epoch']}, validation {h['best_val_acc']:.1%}, "
          f"test {h['test_acc']:.1%}   ({sum(h['seconds']):.0f} s of training)")

test_accs = np.array([h["test_acc"] for h in runs])
mean, std = test_accs.mean(), test_accs.std(ddof=1)     # ddof=1: the sample standard deviation
print(f"test accuracy over {len(seeds)} seeds: mean {mean:.2%}, standard deviation {std:.2%}, "
      f"range {test_accs.min():.1%} to {test_accs.max():.1%} ({np.ptp(test_accs):.1%} apart)")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, key, title in ((axes[0], "train_loss", "training loss"), (axes[1], "val_acc", "validation accuracy")):
    curves = np.array([h[key] for h in runs])                          # (seeds, epochs)
    ep = runs[0]["epoch"]
    for c in curves:
        ax.plot(ep, c, color="gray", lw=0.8, alpha=0.6)
    mu, sd = curves.mean(0), curves.std(0, ddof=1)
    ax.plot(ep, mu, "o-", color="C0", label=f"mean of {len(seeds)} seeds")
    ax.fill_between(ep, mu - sd, mu + sd, color="C0", alpha=0.25, label="mean ± std")
    ax.set_title(title); ax.set_xlabel("epoch"); ax.set_xticks(ep); ax.grid(alpha=0.3); ax.legend()
fig.suptitle(f"the same recipe from {len(seeds)} seeds ({n_seed} images, {seed_epochs} epochs)")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
**What a difference between two runs means.** If one run of each of two methods is trained,
each accuracy carries its own seed's luck: the difference of two independent draws has a
standard deviation of $\sqrt{2}\,\sigma$, with $\sigma$ the spread of one run. Two runs of
the *same* recipe differ by more than $2\sqrt{2}\,\sigma \approx 2.8\,\sigma$ only about one
time in twenty (for a roughly normal spread), so a single-run difference smaller than that is
not evidence of anything. Two more things widen the doubt:

* five seeds measure $\sigma$ only roughly: with four degrees of freedom, the 95% interval of
  the true standard deviation runs from about 0.6 to 2.9 times the measured one (the cell
  prints it, from the $\chi^2$ distribution);
* all runs are scored on the same 1,000 test images, so the spread above leaves out the test
  split's own sampling noise: another 1,000 images would move every accuracy $p$ by about
  $\sqrt{p(1-p)/n}$ (the cell prints it too).

The remedy is the one used here: several seeds per method, and the means compared with their
standard errors $\sigma/\sqrt{k}$ for $k$ runs each.
"""

# %% [markdown]
r"""
**What the output shows.** At full size the five seeds land within about two points of each
other, with a standard deviation under a point (the first lines above): the same recipe, the
same images, a different draw. The curves show where the draws part: in the middle of the
run, at the schedule's high learning rate, one seed's validation accuracy can trail another's
by tens of points; the schedule's quiet end brings them back together, and the band narrows
to its last epoch. The threshold for two single runs comes out near two points, so
a "win" by a point between two single runs of this recipe says nothing; neither would a
difference of a point in 10.5's table between two networks trained once each.

Where one side has no seed (3-NN; the linear models, whose convex losses have one optimum
that the solvers approach), only the network's luck counts, and a gap must exceed about
$2\sigma$. The cell prints 10.5's two gaps in units of this $\sigma$: on mnist5k, MobileNetV2's
lead over 3-NN is more than three of them (the check), a real difference; on digits the gap
is smaller, and the $\sigma$ here belongs to the mnist5k recipe, not to the digits': that
comparison would need its own seeds before one trusts its sign. And the full recipe of 10.2
(three and a half times the images, twice the epochs, its own peak and batch size) beats every
seed of the smaller one:
a change of recipe that moves the accuracy by more than the seeds do is one the data supports.

Two limits. This is the smaller recipe's spread; the full recipe's was not measured (five more
runs of 10.2 would cost most of the chapter's time budget), and a longer run that settles more
may spread less. And five seeds pin $\sigma$ down only within the wide interval printed above.
"""

# %%
from scipy.stats import chi2

dof = len(seeds) - 1
low, high = (np.sqrt(dof / chi2.ppf(q, dof)) for q in (0.975, 0.025))
single = 2 * np.sqrt(2) * std
print(f"one run's spread sigma = {std:.2%}; 95% interval of the true sigma: {low * std:.2%} "
      f"to {high * std:.2%} ({low:.1f} to {high:.1f} times the measured one)")
print(f"two single runs: a difference must exceed 2 x sqrt(2) x sigma = {single:.1%} before it "
      f"means more than the seed")
print(f"{len(seeds)} runs each: the means' difference has a standard deviation of "
      f"sqrt(2/{len(seeds)}) x sigma = {np.sqrt(2 / len(seeds)) * std:.2%}")
print(f"the test split's sampling noise at p = {mean:.1%}, n = {len(test)}: "
      f"{np.sqrt(mean * (1 - mean) / len(test)):.2%}")
gaps = {d: net - acc_of[(d, "3-NN")] for d, net in (("mnist5k", result["accuracy"]), ("digits", digits_acc))}
for d, gap in gaps.items():
    print(f"10.5 on {d}: MobileNetV2 (one run) minus 3-NN (no seed) = {gap:+.1%} = {gap / std:+.1f} sigma")
print(f"10.2's full recipe, one run: {result['accuracy']:.1%}; this smaller recipe's best seed: "
      f"{test_accs.max():.1%}")
if not TINYMBV2_FAST:
    assert 0 < std < 0.02 and mean > 0.9
    assert gaps["mnist5k"] > 3 * std and result["accuracy"] > test_accs.max()
    print("checked (full size): the seeds move the test accuracy (standard deviation above 0, "
          "under 2 points) around a mean above 90%; MobileNetV2's lead over 3-NN on mnist5k is "
          "more than 3 sigma; the full recipe's run beats every seed of the smaller one")

# %% [markdown]
r"""
## Exercises

### Exercise 10.1: one training step

Write the step that `fit` repeats: forward the batch, cross-entropy, then the three calls in
their order. The check runs three steps on a small network and compares the loss you return
and every weight after each step with the same step taken on a copy.
"""

# %%
from tinymbv2.exercises import check_train_step

def train_step(model, optimizer, images, labels):
    """One step of training on one batch, with cross-entropy.

    images: a NumPy array (N, ...) that the model takes; labels: an int array (N,).
    Returns the batch's loss (computed before the step) as a Python float.
    """
    raise NotImplementedError("your code here")

check_train_step(train_step)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def train_step(model, optimizer, images, labels):
    loss = F.cross_entropy(model(Tensor(images)), labels)
    optimizer.zero_grad()      # the gradients of the last step must go first:
    loss.backward()            # backward adds to whatever .grad holds
    optimizer.step()
    return loss.item()
```

`zero_grad` may come anywhere before `backward`, but not between `backward` and `step`: that
would throw away the gradients the step needs.

</details>
"""

# %% [markdown]
r"""
### Exercise 10.2: the confusion matrix

Write `confusion_matrix(predictions, labels, num_classes)`: an integer matrix $C$ of shape
`(num_classes, num_classes)` with $C_{ij}$ the number of samples of true class $i$ predicted
as $j$. Careful with NumPy: `C[labels, predictions] += 1` does *not* add twice to a cell that
the index pairs name twice.
"""

# %%
from tinymbv2.exercises import check_confusion_matrix

def my_confusion_matrix(predictions, labels, num_classes):
    """C[i, j] = number of samples of true class i predicted as class j; int array (K, K)."""
    raise NotImplementedError("your code here")

check_confusion_matrix(my_confusion_matrix)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def my_confusion_matrix(predictions, labels, num_classes):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)    # unbuffered: a repeated pair counts each time
    return cm
```

A loop `for t, p in zip(labels, predictions): cm[t, p] += 1` is as right, and slower;
`np.bincount(labels * num_classes + predictions, minlength=num_classes**2)` reshaped to
`(num_classes, num_classes)` is the fastest.

</details>
"""

# %% [markdown]
r"""
### Exercise 10.3: precision and recall from the matrix

From a confusion matrix, per class $k$: **recall** $= C_{kk} / \sum_j C_{kj}$ (of the images of
class $k$, the share the model found; a row) and **precision** $= C_{kk} / \sum_i C_{ik}$ (of
the images the model called $k$, the share that are $k$; a column). A class that is never
predicted has an empty column: report its precision as 0, not NaN (and likewise an empty row's
recall).
"""

# %%
from tinymbv2.exercises import check_precision_recall

def my_precision_recall(cm):
    """(precision, recall), two float arrays (K,), from a confusion matrix (K, K)."""
    raise NotImplementedError("your code here")

check_precision_recall(my_precision_recall)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def my_precision_recall(cm):
    hits = np.diag(cm).astype(np.float64)
    predicted, present = cm.sum(axis=0), cm.sum(axis=1)     # column sums, row sums
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, present, out=np.zeros_like(hits), where=present > 0)
    return precision, recall
```

`np.divide(..., where=...)` divides only where the sum is positive and leaves the `out` zeros
elsewhere, without a warning.

</details>
"""

# %% [markdown]
r"""
### Exercise 10.4: how far apart two runs may land

Write `seed_spread(accuracies)` for the test accuracies of $k \ge 2$ runs of one recipe that
differ only in their seed (section 10.6): return the mean, the sample standard deviation
$\sigma$ (divided by $k - 1$), and the threshold $2\sqrt2\,\sigma$ that a difference between two
single runs must exceed before it says more than the seed.
"""

# %%
from tinymbv2.exercises import check_seed_spread

def seed_spread(accuracies):
    """(mean, std, threshold) of a list or array of k >= 2 accuracies; three floats."""
    raise NotImplementedError("your code here")

check_seed_spread(seed_spread)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def seed_spread(accuracies):
    a = np.asarray(accuracies, dtype=np.float64)
    std = a.std(ddof=1)              # k - 1: the mean was estimated from the same k runs
    return a.mean(), std, 2 * np.sqrt(2) * std
```

NumPy's `np.std` divides by $k$ unless told `ddof=1`; with five runs that shrinks $\sigma$ by
a factor $\sqrt{4/5} \approx 0.89$, an optimism the spread of a few runs cannot afford. The
$\sqrt2$ is there because both runs carry their seed's luck: $\text{Var}(a - b) = \sigma^2 +
\sigma^2$.

</details>
"""
