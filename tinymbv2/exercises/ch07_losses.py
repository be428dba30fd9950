"""Checks for the exercises of chapter 7. Losses: cross-entropy, focal, Dice."""
from __future__ import annotations

__all__: list[str] = []
