"""Benchmark harnesses: ``python -m bench.pipeline`` (per-stage pipeline numbers) and
``python -m bench.index_bench`` (vector index at scale). They print and write results files;
no timing is asserted anywhere in the tests."""
