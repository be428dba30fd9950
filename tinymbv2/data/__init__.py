"""Data (layer 7): datasets by name with a fixed split, readers, transforms, a loader.

>>> ds = load_dataset("mnist5k")                        # or "digits", "mnist-idx", "cifar10", "folder"
>>> norm = Normalize.from_data(ds.train.images)         # statistics of the train split only
>>> aug = Compose([RandomRotation(10), RandomShift(2), norm])
>>> for images, labels in DataLoader(ds.train.images, ds.train.labels, 64, transform=aug): ...
>>> scenes = load_mnist_scenes()                         # detection and segmentation: boxes, masks
"""
from .datasets import BUNDLED, DATASETS, load_dataset
from .loader import DataLoader
from .readers import (CIFAR10_CLASSES, load_cifar10, load_mnist_idx, read_cifar10_batch,
                      read_idx, read_image, read_image_folder)
from .scenes import (SCENES_SEED, SceneDataset, SceneSplit, load_mnist_scenes, make_scenes,
                     scaled_digit_sides)
from .splits import SPLIT_SEED, DatasetSplits, Split, split_dataset, stratified_split
from .transforms import (Compose, Grayscale, Normalize, RandomCrop, RandomHorizontalFlip,
                         RandomRotation, RandomShift, Resize, channel_stats)

__all__ = [
    "BUNDLED", "DATASETS", "load_dataset", "SPLIT_SEED", "DatasetSplits", "Split",
    "split_dataset", "stratified_split", "DataLoader", "CIFAR10_CLASSES", "load_cifar10",
    "load_mnist_idx", "read_cifar10_batch", "read_idx", "read_image", "read_image_folder",
    "Compose", "Grayscale", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RandomRotation",
    "RandomShift", "Resize", "channel_stats", "SCENES_SEED", "SceneDataset", "SceneSplit",
    "load_mnist_scenes", "make_scenes", "scaled_digit_sides",
]
