"""Real photos that ship inside installed packages (scikit-image, scikit-learn, matplotlib).

Nothing is downloaded and nothing is committed: the images are read from site-packages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(Image.open(Path(skimage.data.__file__).parent / name).convert("RGB"))

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "images" / name
        return np.asarray(Image.open(path).convert("RGB"))

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name
        return np.asarray(Image.open(path).convert("RGB"))

    return load


#: name -> loader. Colour photos of real scenes, in a fixed order.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut.png"),
    "chelsea": _skimage("chelsea.png"),
    "coffee": _skimage("coffee.png"),
    "rocket": _skimage("rocket.jpg"),
    "motorcycle_left": _skimage("motorcycle_left.png"),
    "hubble": _skimage("hubble_deep_field.jpg"),
    "retina": _skimage("retina.jpg"),
    "ihc": _skimage("ihc.png"),
    "camera": _skimage("camera.png"),
    "coins": _skimage("coins.png"),
    "moon": _skimage("moon.png"),
    "page": _skimage("page.png"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}

#: different photographs of the same scene (a stereo pair): a same_scene, not a duplicate
SAME_SCENE: dict[str, Callable[[], np.ndarray]] = {
    "motorcycle_right": _skimage("motorcycle_right.png"),
}


def load_photos(names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Load photos by name, de-duplicated by pixel hash (packages share some images)."""
    out: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for name in names or list(PHOTOS):
        loader = PHOTOS.get(name) or SAME_SCENE[name]
        rgb = np.ascontiguousarray(loader())
        digest = hashlib.sha256(rgb.tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        out[name] = rgb
    return out
