"""Checks for the exercises of chapter 14. Inference and deployment."""
from __future__ import annotations

__all__: list[str] = []
