"""Checks for the exercises of chapter 9. Data, splits and augmentation."""
from __future__ import annotations

__all__: list[str] = []
