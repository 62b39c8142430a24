"""Per-image features (computed once) and per-pair signal tables (vectorised).

Every method and ablation is a function of these columns (``methods``), so each is cheap to
evaluate at any alpha. Semantic columns (``jaccard``, ``semantic_cosine``, ``graph``,
``n_objects_*``) are filled when the feature extractor carries a detector (``ImageFeatures``
with ``objects`` / ``semantic`` / ``graph``); otherwise they are NaN and the semantic rows of
the report say "not available".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image

from dupstream.lab.evaluation.bovw import BoVW, sift_descriptors
from dupstream.lab.evaluation.dataset import EvalSet
from dupstream.workers.decision import DecisionPolicy, default_calibrator
from dupstream.workers.features import FeatureExtractor, ImageFeatures

NUM_CLASSES = 80


@dataclass
class ImageTable:
    features: list[ImageFeatures]
    vectors: np.ndarray  # (n, d) unit
    phash: np.ndarray  # (n, 64) bool
    pdq: np.ndarray  # (n, 256) bool, identity variant
    bovw: np.ndarray  # (n, words) unit
    semantic: np.ndarray | None = None  # (n, ds) or None without a detector
    graph: np.ndarray | None = None
    class_counts: np.ndarray | None = None  # (n, 80)
    n_objects: np.ndarray | None = None  # (n,) int, -1 where the detector did not run
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def has_semantic(self) -> bool:
        return self.n_objects is not None and bool((self.n_objects >= 0).any())


def _progress(it, *, total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def extract_features(extractor: FeatureExtractor, images: Sequence[np.ndarray], *,
                     batch: int = 16, desc: str = "features", progress: bool = True
                     ) -> list[ImageFeatures]:
    """The production feature path (``extract_decoded``) in batches; the pseudo-blob used for
    the content hash is the pixel buffer and shape."""
    out: list[ImageFeatures] = []
    bar = _progress(None, total=len(images), desc=desc, enabled=progress)
    for start in range(0, len(images), batch):
        part = list(images[start : start + batch])
        blobs = [im.tobytes() + str(im.shape).encode() for im in part]
        for f in extractor.extract_decoded(blobs, part):
            if not isinstance(f, ImageFeatures):
                raise f
            out.append(f)
        bar.update(len(part))
    bar.close()
    return out


def phash_bits(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(imagehash.phash(Image.fromarray(rgb)).hash, bool).ravel()


def build_image_table(ds: EvalSet, extractor: FeatureExtractor, *, seed: int = 0,
                      progress: bool = True) -> ImageTable:
    rgbs = [im.rgb for im in ds.images]
    t0 = time.perf_counter()
    feats = extract_features(extractor, rgbs, desc=f"{ds.name}: model", progress=progress)
    t1 = time.perf_counter()
    ph = np.stack([phash_bits(x) for x in rgbs])
    t2 = time.perf_counter()
    descs = [sift_descriptors(x) for x in
             _progress(rgbs, total=len(rgbs), desc=f"{ds.name}: SIFT", enabled=progress)]
    train = [d for d, im in zip(descs, ds.images, strict=True) if im.split == "train"]
    bovw = BoVW(seed=seed).fit(train or descs).transform(descs)
    t3 = time.perf_counter()
    table = ImageTable(
        features=feats,
        vectors=np.stack([f.vector for f in feats]).astype(np.float32),
        phash=ph,
        pdq=np.unpackbits(np.stack([f.pdq.bits for f in feats]), axis=1).astype(bool),
        bovw=bovw,
        timings_s={"model": t1 - t0, "phash": t2 - t1, "sift_bovw": t3 - t2},
    )
    _attach_semantic(table)
    return table


def _attach_semantic(table: ImageTable) -> None:
    feats = table.features
    if not any(getattr(f, "objects", None) is not None for f in feats):
        return
    n = len(feats)
    table.n_objects = np.asarray([-1 if getattr(f, "objects", None) is None else len(f.objects)
                                  for f in feats], np.int64)
    counts = np.zeros((n, NUM_CLASSES), np.float32)
    for i, f in enumerate(feats):
        if getattr(f, "objects", None) is not None and len(f.objects):
            counts[i] = np.bincount(np.asarray(f.objects.labels, np.int64) % NUM_CLASSES,
                                    minlength=NUM_CLASSES)
    table.class_counts = counts

    def stack(attr: str) -> np.ndarray | None:
        vals = [getattr(f, attr, None) for f in feats]
        dim = next((len(v) for v in vals if v is not None), None)
        if dim is None:
            return None
        return np.stack([np.zeros(dim, np.float32) if v is None else np.asarray(v, np.float32)
                         for v in vals])

    table.semantic = stack("semantic")
    table.graph = stack("graph")


def _rowdot(x: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", x[a[s : s + chunk]], x[b[s : s + chunk]])
    return out


def _hamming(bits: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), chunk):
        out[s : s + chunk] = (bits[a[s : s + chunk]] != bits[b[s : s + chunk]]).sum(axis=1)
    return out


def pair_signals(t: ImageTable, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised per-pair columns; similarity columns are "higher = more alike"."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    cols = {
        "visual": np.clip(_rowdot(t.vectors, a, b), -1, 1),
        "phash": 1.0 - _hamming(t.phash, a, b) / t.phash.shape[1],
        "pdq": 1.0 - _hamming(t.pdq, a, b) / t.pdq.shape[1],
        "bovw": _rowdot(t.bovw, a, b),
    }
    nan = np.full(len(a), np.nan)
    for k in ("jaccard", "semantic_cosine", "graph"):
        cols[k] = nan.copy()
    cols["n_objects_a"] = np.full(len(a), -1.0)
    cols["n_objects_b"] = np.full(len(a), -1.0)
    if not t.has_semantic:
        return cols
    na, nb = t.n_objects[a], t.n_objects[b]
    cols["n_objects_a"], cols["n_objects_b"] = na.astype(float), nb.astype(float)
    both = (na > 0) & (nb > 0)
    ca, cb = t.class_counts[a], t.class_counts[b]
    union = np.maximum(ca, cb).sum(axis=1)
    jac = np.minimum(ca, cb).sum(axis=1) / np.maximum(union, 1e-12)
    cols["jaccard"] = np.where(both, jac, np.nan)
    if t.semantic is not None:
        cols["semantic_cosine"] = np.where(both, np.clip(_rowdot(t.semantic, a, b), 0, 1), np.nan)
    if t.graph is not None:
        cols["graph"] = np.where(both, np.clip(_rowdot(t.graph, a, b), -1, 1), np.nan)
    return cols


def product_signals(t: ImageTable, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """The production ``score_pair`` (query = b, reference = a) followed, as in the engine, by
    the verification stage where the decision is open (``DecisionPolicy.needs_verification``):
    the fused score S as shipped, the dihedral PDQ distance, the changed area, the exact flag;
    ``scores``: the PairScores (with their registration where it ran)."""
    fused, pdq_d, changed, exact, sem, scores = [], [], [], [], [], []
    gate = DecisionPolicy(calibrator=default_calibrator())
    for i, j in zip(a, b, strict=True):
        s = gate.score(t.features[j], t.features[i])
        scores.append(s)
        fused.append(s.fused)
        pdq_d.append(s.pdq_distance)
        changed.append(np.nan if s.changed_area is None else s.changed_area)
        exact.append(s.exact)
        v = s.semantic.get("semantic") if isinstance(s.semantic, dict) else None
        sem.append(np.nan if v is None else v)
    return {"fused": np.asarray(fused), "pdq_dihedral": np.asarray(pdq_d, float),
            "changed_area": np.asarray(changed), "exact": np.asarray(exact, bool),
            "semantic_product": np.asarray(sem, float), "scores": scores}
