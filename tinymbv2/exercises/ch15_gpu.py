"""Checks for the exercises of chapter 15. On the GPU with CuPy."""
from __future__ import annotations

__all__: list[str] = []
