"""Checks for the exercises of chapter 11. Fine-tuning and transfer learning."""
from __future__ import annotations

__all__: list[str] = []
