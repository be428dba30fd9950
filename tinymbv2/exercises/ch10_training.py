"""Checks for the exercises of chapter 10. Training MobileNetV2 on MNIST."""
from __future__ import annotations

__all__: list[str] = []
