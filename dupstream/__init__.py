"""dupstream: streaming, semantic-aware image de-duplication.

``dupstream.find_duplicates(path)`` and ``dupstream.open_deduper(...)`` are the Python API
(``dupstream.api``); they are imported on first use, so ``import dupstream`` stays light.
"""
__version__ = "0.1.0"

_API = {"find_duplicates", "open_deduper", "Deduper", "Duplicates"}


def __getattr__(name: str):
    if name in _API:  # by name: the package itself stays below every layer (import-linter)
        import importlib

        return getattr(importlib.import_module("dupstream.api"), name)
    raise AttributeError(f"module 'dupstream' has no attribute {name!r}")
