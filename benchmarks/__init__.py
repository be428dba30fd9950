"""Benchmarks: scripts run with ``python -m benchmarks.<name>``; they print tables, never assert."""
