"""Benchmarks: ``python -m vita.bench.step_time`` (engine overhead against a plain torch loop)."""
