"""Benchmarks: `python -m bench.<name>`; each prints its figures and, last, one JSON line."""

from pathlib import Path

# Real files nobody here made (../shared/data beside the checkout); used when present, never required.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
