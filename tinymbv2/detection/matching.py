r"""Which ground-truth box each default box learns: SSD's matching.

A default box is matched to the ground-truth box it overlaps most, if that IoU is at least
the threshold (0.5); below it, the default box is background. Then every ground-truth box
also takes the one default box it overlaps most, even below the threshold, so that no
object goes without a default box to learn it (a small digit between the default boxes'
sizes would otherwise be background everywhere). This is torchvision's ``SSDMatcher``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SSDMatcher"]


class SSDMatcher:
    """SSD's matching of default boxes to ground-truth boxes.

    Args:
        threshold: The least IoU of a match (0.5 in SSD).

    Raises:
        ValueError: A threshold outside [0, 1].
    """

    BACKGROUND = -1

    def __init__(self, threshold: float = 0.5):
        if not 0 <= threshold <= 1:
            raise ValueError(f"SSDMatcher: threshold must be in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)

    def __call__(self, iou) -> np.ndarray:
        """The ground-truth index for each default box, or -1 (background).

        Args:
            iou: (M, N) IoU of M >= 1 ground-truth boxes against N >= 1 default boxes
                ([box_iou][tinymbv2.detection.boxes.box_iou] of the two).

        Returns:
            (N,) int64: for default box n, the index in [0, M) of its ground-truth box, or -1.

        Raises:
            ValueError: An IoU matrix that is not 2-D or has no rows or columns.
        """
        q = np.asarray(iou)
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
            raise ValueError(f"SSDMatcher: expected an (M, N) IoU matrix with M >= 1 ground-truth "
                             f"and N >= 1 default boxes, got shape {q.shape}")
        matches = q.argmax(axis=0)                          # each default box's best ground truth
        matches[q.max(axis=0) < self.threshold] = self.BACKGROUND
        best_default = q.argmax(axis=1)                     # each ground truth's best default box
        matches[best_default] = np.arange(q.shape[0])       # a later ground truth wins a shared one
        return matches.astype(np.int64)
