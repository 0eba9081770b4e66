"""Benchmarks at scale (`make bench`, `python -m benchmarks.run`): see `benchmarks/run.py`.

Not part of the package or of `make test` (only a small smoke test runs the harness there).
"""
