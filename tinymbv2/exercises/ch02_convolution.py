"""Checks for the exercises of chapter 2. Convolution: dense, depthwise, pointwise."""
from __future__ import annotations

__all__: list[str] = []
