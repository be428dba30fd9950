"""Checks for the exercises of chapter 13. Architecture design: width and resolution."""
from __future__ import annotations

__all__: list[str] = []
