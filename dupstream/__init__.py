"""dupstream: streaming, semantic-aware image de-duplication."""
__version__ = "0.1.0"
