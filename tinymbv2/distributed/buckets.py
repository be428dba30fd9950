"""Gradient buckets: which parameters' gradients travel together in one all-reduce.

An all-reduce has a fixed cost per call (latency, a handshake between the ranks) and a cost
per byte. Sending each parameter's gradient alone pays the fixed cost a hundred times a
step; sending them all at once waits for the whole backward pass. PyTorch's
DistributedDataParallel packs the gradients into *buckets* of about ``bucket_cap_mb``
megabytes, in reverse parameter order: the backward pass produces the last layers'
gradients first, so the first bucket fills first, and its all-reduce runs while the
backward pass computes the gradients of the next ones.

Here a bucket is closed before a gradient that would take it over the cap (so a bucket
never exceeds it unless one parameter alone does, and then that parameter is a bucket by
itself), and parameters of different dtypes go to different buckets. PyTorch also makes
its first bucket small (1 MiB) so that communication starts sooner; here every bucket has
the one cap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Bucket:
    """One flat buffer of gradients, all-reduced as one message.

    Attributes:
        dtype: The dtype of every gradient in it.
        members: Indices (into the parameter list) of its parameters, in the order they
            sit in ``flat``: reverse parameter order.
        offsets: Where each member's gradient starts in ``flat``.
        sizes: How many elements each member has.
        flat: The buffer, ``sum(sizes)`` elements of ``dtype``.
    """

    dtype: np.dtype
    members: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    flat: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(self.sizes) * self.dtype.itemsize


def assign_buckets(arrays, cap_bytes: int) -> list[Bucket]:
    """Group parameters into buckets of at most ``cap_bytes``, last parameter first.

    Args:
        arrays: The parameters' arrays (anything with ``size`` and ``dtype``), in
            parameter order.
        cap_bytes: The most bytes a bucket holds, > 0 (one larger parameter: a bucket alone).

    Returns:
        The buckets, the one holding the last parameter first, each with its ``flat``
        buffer allocated (zeros).

    Raises:
        ValueError: ``cap_bytes`` is not positive.
    """
    if not cap_bytes > 0:
        raise ValueError(f"assign_buckets: expected a positive cap in bytes, got {cap_bytes!r}")
    buckets, open_bucket = [], {}  # open_bucket: dtype -> the bucket being filled
    for index in reversed(range(len(arrays))):
        a = arrays[index]
        dtype, nbytes = np.dtype(a.dtype), a.size * np.dtype(a.dtype).itemsize
        bucket = open_bucket.get(dtype)
        if bucket is not None and bucket.members and bucket.nbytes + nbytes > cap_bytes:
            bucket = None  # full: this gradient starts the next one
        if bucket is None:
            bucket = open_bucket[dtype] = Bucket(dtype)
            buckets.append(bucket)  # in the order buckets start: the order they fill
        bucket.offsets.append(sum(bucket.sizes))
        bucket.members.append(index)
        bucket.sizes.append(int(a.size))
    for bucket in buckets:
        bucket.flat = np.zeros(sum(bucket.sizes), dtype=bucket.dtype)
    return buckets
