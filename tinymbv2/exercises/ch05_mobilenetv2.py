"""Checks for the exercises of chapter 5. The inverted residual block and MobileNetV2."""
from __future__ import annotations

__all__: list[str] = []
