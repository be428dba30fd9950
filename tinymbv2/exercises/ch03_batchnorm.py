"""Checks for the exercises of chapter 3. Batch normalisation."""
from __future__ import annotations

__all__: list[str] = []
