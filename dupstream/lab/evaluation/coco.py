"""COCO-Duplicate-style: multi-object photos from packages, edited copies, hard negatives.

Sources: ``sources.PHOTO_CATALOGUE`` (darknet, opencv-doc, scikit-image, scikit-learn,
matplotlib photos; whatever is present), at most ``max_side`` px. Photos of one scene (stereo
pairs, viewpoint changes) form one group; groups are split 60/20/20 with the seed.

Scenes: each photo and its two halves (the halves share no pixels: same place, same object
classes, not copies). Positives: a scene and an edited copy (``EDITS``: JPEG, resize, colour,
hue, crop, flip, caption, watermark, an object added (an RGBA tuxpaint cut-out pasted in) or
removed (the reference has a pasted cut-out the copy lacks)); full photos get every edit, halves
``half_edits`` of them. Negatives, as many as positives: another scene's image of the same split
that shares no pixels - preferring one that shares a tagged object class (``same_class``), the
other photos of the same scene, a whole photograph on one side at least (``same_scene``), and
two halves - of the same photo, or one of each photo of a stereo pair (``scene_part``: the same
place and object classes, little or no content in common; the product's ``same_scene``
evidence needs content that matches, so it is counted on ``same_scene`` pairs).

Issue 12 kinds (``same_scene=True``, ``traps=True``): full photos also get the framing edits
(``edits.FRAMING_EDITS``: phone / desktop screenshot, solid / blurred border, letterbox, rotation
by an arbitrary angle with fill, crop + caption + colour combined). Same-scene negatives
(``same_scene``): every pair of full photographs of one scene - the catalogue's stereo and
viewpoint groups, ``sources.SCENE_CATALOGUE`` (more stereo pairs, consecutive frames) and
consecutive shots of packaged videos (``sources.video_scene_pairs``; these scenes get no edits);
two frames of one static camera (``sources.STATIC_CAMERA_GROUPS``) are labelled by the product's
rule for them (``scene_rule.static_frame_label``): ``static_frames`` copies where nothing solid
changed, ``same_scene`` negatives where a region did, left out in between.
Overlay traps (``trap_caption``, ``trap_watermark``, ``trap_border``, ``trap_frame``): two
different full photos of one split wearing one pixel-identical overlay (``edits.overlay``).
"""

from __future__ import annotations

import cv2
import numpy as np

from dupstream.lab.data import edits as E
from dupstream.lab.evaluation.dataset import EvalSet, fit_max_side, split_groups
from dupstream.lab.evaluation.scene_rule import static_frame_label
from dupstream.lab.evaluation.sources import (
    STATIC_CAMERA_GROUPS,
    load_catalogue_photos,
    load_scene_photos,
    load_stamp,
    stamp_paths,
    video_scene_pairs,
)


def hue_shift(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    shift = int(rng.integers(12, 40)) * int(rng.choice([-1, 1]))
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    sat = float(rng.uniform(0.7, 1.3))
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * sat, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def paste_cutout(rgb: np.ndarray, rgba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Alpha-blend an RGBA cut-out covering ~8-20 % of the picture at a random place."""
    h, w = rgb.shape[:2]
    target = float(rng.uniform(0.08, 0.2)) * h * w
    ch, cw = rgba.shape[:2]
    f = min(np.sqrt(target / (ch * cw)), 0.9 * h / ch, 0.9 * w / cw)
    nh, nw = max(4, int(ch * f)), max(4, int(cw * f))
    small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
    y = int(rng.integers(0, h - nh + 1))
    x = int(rng.integers(0, w - nw + 1))
    out = rgb.astype(np.float32).copy()
    alpha = small[..., 3:4].astype(np.float32) / 255.0
    region = out[y : y + nh, x : x + nw]
    out[y : y + nh, x : x + nw] = region * (1 - alpha) + small[..., :3] * alpha
    return out.astype(np.uint8)


def _solid_cutout(rng: np.random.Generator) -> np.ndarray:
    """Fallback object when no stamps are extracted: a filled ellipse with an alpha mask."""
    rgba = np.zeros((64, 96, 4), np.uint8)
    colour = [int(c) for c in rng.integers(0, 255, 3)] + [255]
    cv2.ellipse(rgba, (48, 32), (44, 28), 0, 0, 360, colour, -1)
    return rgba


BASE_EDITS = ("jpeg", "resize", "recolour", "hue", "crop", "hflip", "caption", "watermark",
              "object_added", "object_removed")
EDITS = (*BASE_EDITS, *E.FRAMING_EDITS)
TRAPS = tuple(f"trap_{k}" for k in E.OVERLAYS)
_SIMPLE = {"jpeg": E.jpeg, "resize": E.resize, "recolour": E.recolour, "hue": hue_shift,
           "crop": E.crop, "hflip": E.hflip, "caption": E.caption, "watermark": E.watermark,
           **E.FRAMING_EDITS}


def _halves(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    if w >= h:
        return rgb[:, : w // 2], rgb[:, w // 2 :]
    return rgb[: h // 2], rgb[h // 2 :]


def build_coco(*, seed: int = 0, max_side: int = 512, half_edits: int = 4,
               max_photos: int | None = None, framing: bool = True, same_scene: bool = True,
               traps: bool = True) -> EvalSet:
    photos, missing = load_catalogue_photos()
    if max_photos is not None:
        photos = photos[:max_photos]
    extras: list[dict] = []
    if same_scene:
        more, missed = load_scene_photos()
        missing = [*missing, *missed]
        extras = [*more, *video_scene_pairs()]
        for p in extras:
            p["scene_only"] = True
        photos = [*photos, *extras]
    rng = np.random.default_rng(seed)
    # the catalogue's groups split as they always have; groups only the scene extras bring
    # (more stereo pairs, video shots) are split on their own with the same seed
    split_of = split_groups(sorted({p["group"] for p in photos if not p.get("scene_only")}),
                            seed=seed)
    split_of.update(split_groups(sorted({p["group"] for p in photos} - set(split_of)), seed=seed))
    stamps = stamp_paths()
    stamp_split = split_groups([str(s) for s in stamps], seed=seed) if stamps else {}
    ds = EvalSet("coco", domain="photos", info={
        "seed": seed, "max_side": max_side, "photos": [p["name"] for p in photos],
        "missing": missing, "stamps": len(stamps), "half_edits": half_edits,
        "framing": framing, "same_scene": same_scene, "traps": traps})

    def cutout(split: str) -> np.ndarray:
        pool = [s for s in stamps if stamp_split[str(s)] == split]
        if not pool:
            return _solid_cutout(rng)
        return load_stamp(pool[int(rng.integers(len(pool)))])

    # scenes: (key, photo name, region, group, classes, split, image index)
    scenes = []
    for p in photos:
        split = split_of[p["group"]]
        full = fit_max_side(p["rgb"], max_side)
        regions = [("full", full)]
        if not p.get("scene_only"):
            regions += list(zip(("a", "b"), _halves(full), strict=True))
        for region, rgb in regions:
            key = f"{p['name']}[{region}]"
            idx = ds.add(rgb, source=p["group"], cluster=key, split=split, note="original")
            scenes.append({"key": key, "photo": p["name"], "region": region, "group": p["group"],
                           "classes": p["classes"], "split": split, "idx": idx, "copies": [],
                           "scene_only": bool(p.get("scene_only"))})
    for sc in scenes:
        if sc["scene_only"]:
            continue
        rgb = ds.images[sc["idx"]].rgb
        kinds = list(EDITS if framing else BASE_EDITS)
        if sc["region"] != "full":
            kinds = [kinds[i] for i in sorted(rng.choice(len(kinds), half_edits, replace=False))]
        for kind in kinds:
            ref = sc["idx"]
            if kind == "object_added":
                copy = paste_cutout(rgb, cutout(sc["split"]), rng)
            elif kind == "object_removed":  # the reference carries an object the copy lacks
                ref = ds.add(paste_cutout(rgb, cutout(sc["split"]), rng), source=sc["group"],
                             cluster=sc["key"], split=sc["split"], note="with a pasted object")
                copy = rgb
            else:
                copy = _SIMPLE[kind](rgb, rng)
            if kind == "object_removed":
                ds.pair(ref, sc["idx"], 1, kind)
                sc["copies"].append(ref)
                continue
            j = ds.add(copy, source=sc["group"], cluster=sc["key"], split=sc["split"], note=kind)
            sc["copies"].append(j)
            ds.pair(ref, j, 1, kind)
    _negatives(ds, scenes, rng)
    if same_scene:
        _same_scene(ds, scenes)
    if traps:
        _traps(ds, scenes, rng)
    return ds


def _same_scene(ds: EvalSet, scenes: list[dict]) -> None:
    """Every pair of full photographs of one scene (group): ``same_scene`` negatives; two frames
    of a static camera (``STATIC_CAMERA_GROUPS``) by the product's rule
    (``static_frame_label``): ``static_frames`` copies, ``same_scene`` negatives, or left out
    when the rule does not decide (listed in ``info["static_ambiguous"]``)."""
    full = [s for s in scenes if s["region"] == "full"]
    for i, s in enumerate(full):
        for t in full[i + 1 :]:
            if s["group"] != t["group"] or s["photo"] == t["photo"]:
                continue
            if s["group"] not in STATIC_CAMERA_GROUPS:
                ds.pair(s["idx"], t["idx"], 0, "same_scene")
                continue
            label = static_frame_label(ds.images[s["idx"]].rgb, ds.images[t["idx"]].rgb)
            if label is None:
                ds.info.setdefault("static_ambiguous", []).append(f"{s['key']} / {t['key']}")
            else:
                ds.pair(s["idx"], t["idx"], label, "static_frames" if label else "same_scene")


def _traps(ds: EvalSet, scenes: list[dict], rng: np.random.Generator) -> None:
    """For each full catalogue photo and each overlay kind: it and another full photo of the same
    split (another scene) wearing one pixel-identical overlay; a negative ``trap_<kind>``."""
    full = [s for s in scenes if s["region"] == "full" and not s["scene_only"]]
    for sc in full:
        others = [t for t in full if t["split"] == sc["split"] and t["group"] != sc["group"]]
        if not others:
            continue
        for kind in E.OVERLAYS:
            t = others[int(rng.integers(len(others)))]
            apply = E.overlay(kind, int(rng.integers(2**31)))
            ims = []
            for s in (sc, t):
                ims.append(ds.add(apply(ds.images[s["idx"]].rgb), source=s["group"],
                                  cluster=s["key"], split=s["split"], note=f"overlay {kind}"))
            ds.pair(ims[0], ims[1], 0, f"trap_{kind}")


def _overlap(s: dict, t: dict) -> bool:
    return s["photo"] == t["photo"] and (s["region"] == t["region"] or "full" in
                                         (s["region"], t["region"]))


def _negatives(ds: EvalSet, scenes: list[dict], rng: np.random.Generator) -> None:
    for sc in scenes:
        others = [t for t in scenes if t["split"] == sc["split"] and not _overlap(sc, t)]
        if not others:
            continue
        # another frame of a static camera is no negative by its group (``_same_scene``)
        same_scene = [t for t in others if t["group"] == sc["group"]
                      and (t["photo"] == sc["photo"] or t["group"] not in STATIC_CAMERA_GROUPS)]
        diff = [t for t in others if t["group"] != sc["group"]]
        same_class = [t for t in diff if sc["classes"] & t["classes"]]
        for n in range(len(sc["copies"])):
            if same_scene and n == 0:
                pool, kind = same_scene, "same_scene"
            elif same_class and n % 2 == 0:
                pool, kind = same_class, "same_class"
            elif diff:
                pool, kind = diff, "different"
            else:
                continue
            t = pool[int(rng.integers(len(pool)))]
            images = [t["idx"], *t["copies"]]
            if kind == "same_scene" and "full" not in (sc["region"], t["region"]):
                kind = "scene_part"  # two halves: little or no content in common
            ds.pair(sc["idx"], images[int(rng.integers(len(images)))], 0, kind)
