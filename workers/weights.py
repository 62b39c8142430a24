"""Weights descriptors: where a model's weights come from, what they must hash to, how to feed them.

Every backend checks its descriptor when it loads (never in ``__init__``), so a wrong or missing
file fails loudly with ``WeightsError`` instead of producing silently different vectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dupstream.core.errors import WeightsError


@dataclass(frozen=True, kw_only=True)
class WeightsDescriptor:
    name: str
    source: str
    sha256: str | None
    preprocessing: str
    license: str = ""
    #: when the full digest is not published (torchvision names its files ``<name>-<prefix>.pth``
    #: with the first hex digits of the sha256), the prefix that must match
    sha256_prefix: str | None = None

    def verify(self, path: str | Path) -> Path:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(
                f"{self.name}: weights file not found at {path} (source: {self.source})"
            )
        if self.sha256 is not None or self.sha256_prefix is not None:
            digest = sha256_file(path)
            if self.sha256 is not None and digest != self.sha256:
                raise WeightsError(
                    f"{self.name}: weights file {path} has sha256 {digest}, expected {self.sha256}"
                )
            if self.sha256_prefix is not None and not digest.startswith(self.sha256_prefix):
                raise WeightsError(
                    f"{self.name}: weights file {path} has sha256 {digest}, "
                    f"expected {self.sha256_prefix}..."
                )
        return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
