"""Checks for the exercises of chapter 6. Weight initialisation."""
from __future__ import annotations

__all__: list[str] = []
