"""Benchmarks: ``python -m vita.bench [engine] [tokens] [data]`` writes docs/BENCHMARKS.md (see __main__)."""
