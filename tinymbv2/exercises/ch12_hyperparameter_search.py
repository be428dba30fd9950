"""Checks for the exercises of chapter 12. Hyper-parameter search: grid vs random."""
from __future__ import annotations

__all__: list[str] = []
