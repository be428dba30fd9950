"""Fusion: a pass that rewrites a model so that recognised layer patterns run as fused ops.

(Being written: for now ``fuse`` returns the model unchanged.)
"""
from __future__ import annotations


def fuse(model):
    """A fused view of ``model`` (placeholder while the pass is written: the model itself)."""
    return model
