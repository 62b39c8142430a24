"""Benchmark harnesses: ``python -m dupstream.bench.pipeline`` (per-stage pipeline numbers)
and ``python -m dupstream.bench.index_bench`` (vector index at scale). They print and write
results files; no timing is asserted anywhere in the tests."""
