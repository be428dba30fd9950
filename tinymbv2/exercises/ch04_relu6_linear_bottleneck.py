"""Checks for the exercises of chapter 4. ReLU6 and the linear bottleneck."""
from __future__ import annotations

__all__: list[str] = []
