"""Checks for the exercises of chapter 1. Autograd from scratch."""
from __future__ import annotations

__all__: list[str] = []
