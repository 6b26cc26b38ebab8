"""Benchmarks of resonate_async, side by side with peers: ``python -m benchmarks`` (see README)."""
