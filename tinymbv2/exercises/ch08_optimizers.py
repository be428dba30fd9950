"""Checks for the exercises of chapter 8. Optimizers and learning-rate schedules."""
from __future__ import annotations

__all__: list[str] = []
