"""trackhook's benchmark: `python -m bench` (see docs/PERFORMANCE.md)."""
