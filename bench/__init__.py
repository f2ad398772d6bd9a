"""Benchmarks (run on demand; CI runs only their smoke mode)."""
