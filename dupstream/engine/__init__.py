"""The engine: wires workers (models) and state (index, records) into a ``Deduper``."""

from dupstream.engine.deduper import Deduper, Failed, Upload

__all__ = ["Deduper", "Failed", "Upload"]
