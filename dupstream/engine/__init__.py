"""The engine: wires workers (models) and state (index, records) into a ``Deduper``."""

from dupstream.engine.deduper import Deduper, Extracted, Failed, Upload

__all__ = ["Deduper", "Extracted", "Failed", "Upload"]
