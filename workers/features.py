"""Per-image features: everything the comparison needs, computed once per image, in batches."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dupstream.core.errors import ConfigError, DupstreamError, ModelError, WeightsError
from dupstream.workers.decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, decode, decode_image
from dupstream.workers.descriptors import image_descriptors
from dupstream.workers.detector import Detector
from dupstream.workers.embedder import Embedder
from dupstream.workers.hashing import PDQ, content_hash, grey, pdq_hash_gray
from dupstream.workers.regions import WORK_SIDE, content_box_of_work
from dupstream.workers.semantic import (
    DEFAULT_TOP_K,
    NUM_COLOURS,
    Objects,
    select_objects,
    semantic_vector,
)
from dupstream.workers.upright import TurnedRect, turned_rect, upright_turns
from dupstream.workers.verify import REG_SIDE, canonical_registration, registration_thumb

if TYPE_CHECKING:
    from dupstream.workers.gcn import GraphEncoder

THUMB = 64
#: a JPEG at least twice this size (longest side) decodes at the largest DCT reduction still at
#: least this size (PIL draft mode): the models read <= 416 px, PDQ stays within 4 bits of the
#: full-resolution hash (docs/PERFORMANCE.md, decode); None: always full resolution
DEFAULT_DRAFT_SIDE = 1024
#: longest side of the colour object thumbnail: what the detector reads when objects are found
#: lazily (the cascade), kept JPEG-encoded in the record so a reference's objects can be found
#: when a later query first needs them. YOLOv3-tiny's input size: at 256 px its scores fall
#: (motorcycle 0.65 -> 0.26 on the packaged photo); at 416 the boxes of 12 of 15 packaged
#: photos equal those on the full image
OBJ_SIDE = 416
# the content box is found on the registration thumbnail (content_box's own working copy)
assert REG_SIDE == WORK_SIDE


def _isolated(call: Callable[[Sequence], Sequence], items: Sequence, *,
              on_error: Callable[[ModelError], object]) -> list:
    """One model ``call`` for the batch; if it fails, one call per item, so the item that breaks
    the model gets ``on_error(its error)`` and the others their results. Deployment faults
    (weights, configuration) are never isolated: they propagate."""
    try:
        return list(call(items))
    except ModelError as exc:
        _raise_if_fatal(exc)
    out: list = []
    for item in items:
        try:
            out.append(call([item])[0])
        except ModelError as exc:
            _raise_if_fatal(exc)
            out.append(on_error(exc))
    return out


def _crops(decoded: Sequence, good: list[int], hashed: dict[int, _Hashed]
           ) -> tuple[list[int], list[int], list[np.ndarray]]:
    """(framed, turned, pictures to embed): the framed pictures' content crops, then four
    upright orientations of each turned picture (``upright.upright_turns``)."""
    framed = [i for i in good if hashed[i].box is not None]
    turned = [i for i in good if hashed[i].turned is not None]
    crops = [_crop(decoded[i], hashed[i].box) for i in framed]
    for i in turned:
        crops += upright_turns(decoded[i], hashed[i].turned)
    return framed, turned, crops


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def object_thumb(rgb: np.ndarray, side: int = OBJ_SIDE) -> np.ndarray:
    """The colour picture at longest side ``side`` (never enlarged), INTER_AREA."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return np.ascontiguousarray(rgb[..., :3])
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb[..., :3], size, interpolation=cv2.INTER_AREA)


def thumbnail(img: np.ndarray) -> np.ndarray:
    """THUMB x THUMB grey uint8 of an RGB or grey picture."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


class _DecodedOnRead:
    """The ``reg`` field of ``ImageFeatures``: the grey registration thumbnail, or - for features
    read from a record, which keeps it JPEG-encoded (``reg_jpeg``) - decoded on its first read:
    a reference is read for every query it is a candidate of, but registered only against the
    few whose decision is open."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: object, objtype: type | None = None) -> np.ndarray | None:
        if obj is None:
            return None  # the field's default
        value = obj.__dict__.get(self._slot)
        jpg = obj.__dict__.get("reg_jpeg")
        if value is None and jpg is not None and len(jpg):
            value = cv2.imdecode(np.asarray(jpg, np.uint8), cv2.IMREAD_GRAYSCALE)
            obj.__dict__[self._slot] = value
        return value

    def __set__(self, obj: object, value: np.ndarray | None) -> None:
        obj.__dict__[self._slot] = value


@dataclass
class ImageFeatures:
    digest: str
    pdq: PDQ
    vector: np.ndarray  # (dim,) float32, unit norm
    width: int
    height: int
    thumb: np.ndarray  # (THUMB, THUMB) uint8 luminance: where two copies differ
    #: the picture's embedding without its frame (borders, letterbox, screenshot UI): the
    #: embedding of ``content_box``'s crop, or ``vector`` itself when the picture fills the image
    content: np.ndarray | None = None
    #: (x0, y0, x1, y1) of the picture inside its frame, in pixels; None: it fills the image
    content_box: tuple[int, int, int, int] | None = None
    #: (4, dim) for a picture turned by an arbitrary angle on a solid fill (``upright``): the
    #: embeddings of the picture cut back onto the axes in its four orientations (which one is
    #: upright is not known: the search and ``content_similarity`` take the best); else None
    content_turns: np.ndarray | None = None
    #: registration thumbnail (grey uint8, longest side <= verify.REG_SIDE) for verification;
    #: decoded from ``reg_jpeg`` on first read where only that is set (a record's)
    reg: np.ndarray | None = _DecodedOnRead()  # a descriptor: the default is None
    #: image-level descriptors (``descriptors.NAMES``): what kind of picture this is
    descriptors: np.ndarray | None = None
    #: colour thumbnail (RGB uint8, longest side <= OBJ_SIDE) the cascade detects objects on
    obj_thumb: np.ndarray | None = None
    #: the same, JPEG-encoded as a record keeps it (a reference's): decoded only when its
    #: objects are needed, not for every candidate read
    obj_jpeg: np.ndarray | None = None
    #: the registration thumbnail JPEG-encoded as a record keeps it (a reference's): ``reg``
    #: decodes it when verification first reads it, not for every candidate read
    reg_jpeg: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: semantic part, all optional. ``objects`` is None when no detector ran (or it failed on
    #: this image), ``Objects.empty()`` when it ran and found nothing.
    objects: Objects | None = None
    semantic: np.ndarray | None = None  # (SEMANTIC_DIM,) float32, unit norm or zeros
    graph: np.ndarray | None = None  # (gcn dim,) float32, unit norm or zeros


@dataclass(frozen=True)
class _Hashed:
    """The hash stage's outputs for one image."""

    digest: str
    pdq: PDQ
    thumb: np.ndarray
    reg: np.ndarray
    reg_jpeg: np.ndarray
    obj_thumb: np.ndarray
    box: tuple[int, int, int, int] | None
    #: the turned picture's rectangle in the decoded pixels (``upright.turned_rect``) or None
    turned: TurnedRect | None
    descriptors: np.ndarray
    ms: float


@dataclass
class Prepared:
    """A batch after ``FeatureExtractor.prepare``: the blobs, their decoded pixels (or the
    error of each that failed), per-image decode times, the picture sizes before draft
    decoding, the digests when the caller had them, and the hash stage's outputs (None until
    it has run)."""

    blobs: list[bytes]
    decoded: list[np.ndarray | DupstreamError]
    decode_ms: list[float]
    sizes: list[tuple[int, int] | None] | None = None
    digests: list[str] | None = None
    hashed: dict[int, _Hashed] | None = None

    @property
    def good(self) -> list[int]:
        """Positions of the images that decoded."""
        return [i for i, d in enumerate(self.decoded) if not isinstance(d, DupstreamError)]


def _hash_one(rgb: np.ndarray, digest: str) -> _Hashed:
    """Hashes, thumbnails, the content box and the image descriptors of one decoded picture."""
    t0 = time.perf_counter()
    # one grey image for every hash-stage feature cut from luma: PDQ's eight hashes in one
    # pass over it, the difference thumbnail, the registration thumbnail
    g = grey(rgb) if rgb.ndim == 3 else np.ascontiguousarray(rgb)
    pdq, thumb, reg = pdq_hash_gray(g), thumbnail(g), registration_thumb(g)
    obj_thumb = object_thumb(rgb)
    # the registration thumbnail is content_box's working copy: found on it, not again
    box = content_box_of_work(reg, rgb.shape[:2])
    turned = turned_rect(reg)
    if turned is not None:
        turned = turned.scaled(rgb.shape[1] / reg.shape[1])
    # then kept as a record keeps it (JPEG): registration sees the same pixels for a fresh
    # picture and for one read back from its record
    reg, reg_jpeg = canonical_registration(reg)
    descriptors = image_descriptors(rgb)
    return _Hashed(digest=digest, pdq=pdq, thumb=thumb, reg=reg, reg_jpeg=reg_jpeg,
                   obj_thumb=obj_thumb, box=box, turned=turned, descriptors=descriptors,
                   ms=(time.perf_counter() - t0) * 1e3)


class FeatureExtractor:
    """Decode, hash, embed and (optionally) detect objects in a batch of image blobs; one call
    per model per batch.

    Per-image failures (bad bytes, bombs, a model failing on one image) come back in place as
    ``DupstreamError`` values so the rest of the batch continues. A detector or GCN failure on one
    image does not fail the image: its semantic fields stay ``None`` and the comparison falls back
    to visual evidence.

    Deployment faults are never per-image: a ``WeightsError`` (weights missing or failing their
    sha256 check) or a ``ConfigError`` propagates out of every call, whatever the image. Call
    ``warm_up()`` at start so they surface before the first event.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        detector: Detector | None = None,
        graph_encoder: GraphEncoder | None = None,
        top_k: int = DEFAULT_TOP_K,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
        draft_side: int | None = None,
        hash_workers: int = 0,
    ) -> None:
        if hash_workers < 0:
            raise ConfigError(f"hash_workers must be >= 0, got {hash_workers}")
        self.draft_side = draft_side
        #: threads that run a batch's hash stage (hashes, thumbnails, content box, descriptors)
        #: while the embedder runs on the whole pictures (0: in line, before it); the pool is
        #: made on first use
        self.hash_workers = hash_workers
        self._hash_pool: ThreadPoolExecutor | None = None
        self.embedder = embedder
        self.detector = detector
        self.graph_encoder = graph_encoder
        self.top_k = top_k
        self.max_pixels = max_pixels
        self.max_side = max_side

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray | DupstreamError]:
        out: list[np.ndarray | DupstreamError] = []
        for data in blobs:
            try:
                out.append(decode_image(data, max_pixels=self.max_pixels, max_side=self.max_side))
            except DupstreamError as exc:
                out.append(exc)
        return out

    def extract(self, blobs: Sequence[bytes], *, objects: bool = True,
                digests: Sequence[str] | None = None) -> list[ImageFeatures | DupstreamError]:
        """Features of each blob (errors in place). ``objects=False``: no detector or GCN now
        (the cascade): ``objects`` stays None until ``add_objects``. ``digests``: the blobs'
        SHA-256 when the caller has them already. Large JPEGs decode in draft mode
        (``draft_side``); width, height and the content box stay in the picture's own pixels.
        The same as ``complete(prepare(blobs, digests=digests), objects=objects)``."""
        return self.complete(self.prepare(blobs, digests=digests), objects=objects)

    def prepare(self, blobs: Sequence[bytes], *,
                digests: Sequence[str] | None = None) -> Prepared:
        """The batch's first half, no model: decode each blob, then (unless the hash stage runs
        in its pool beside the embedder, ``hash_workers``) the hash stage - hashes, thumbnails,
        content box, descriptors. ``complete`` does the rest; the two may run in different
        threads (``Deduper.process_many`` overlaps one batch's ``prepare`` with another's
        embedding)."""
        decoded, sizes, decode_ms = [], [], []
        for data in blobs:  # timed per image: decode cost follows each image's size
            t0 = time.perf_counter()
            try:
                d = decode(data, max_pixels=self.max_pixels, max_side=self.max_side,
                           draft_side=self.draft_side)
                decoded.append(d.rgb)
                sizes.append((d.width, d.height))
            except DupstreamError as exc:
                decoded.append(exc)
                sizes.append(None)
            decode_ms.append((time.perf_counter() - t0) * 1e3)
        prepared = Prepared(blobs=list(blobs), decoded=decoded, decode_ms=decode_ms,
                            sizes=sizes, digests=None if digests is None else list(digests))
        if not self.hash_workers:
            prepared.hashed = self._hash_stage(prepared)
        return prepared

    def extract_decoded(
        self,
        blobs: Sequence[bytes],
        decoded: Sequence[np.ndarray | DupstreamError],
        *,
        decode_ms: float | Sequence[float] = 0.0,
        objects: bool = True,
        sizes: Sequence[tuple[int, int] | None] | None = None,
        digests: Sequence[str] | None = None,
    ) -> list[ImageFeatures | DupstreamError]:
        """Features of the decoded images. ``timings_ms``: ``decode`` and ``hash`` (hashes,
        content region, thumbnails, descriptors) are this image's own; ``embed``, ``detect`` and
        ``graph`` are its share of the batched model calls (``objects=False``: not run)."""
        per_decode = (list(decode_ms) if not isinstance(decode_ms, int | float)
                      else [float(decode_ms)] * len(blobs))
        prepared = Prepared(blobs=list(blobs), decoded=list(decoded), decode_ms=per_decode,
                            sizes=None if sizes is None else list(sizes),
                            digests=None if digests is None else list(digests))
        return self.complete(prepared, objects=objects)

    def _hash_stage(self, prepared: Prepared) -> dict[int, _Hashed]:
        blobs, decoded, digests = prepared.blobs, prepared.decoded, prepared.digests
        return {i: _hash_one(decoded[i], digests[i] if digests is not None
                             else content_hash(blobs[i])) for i in prepared.good}

    def complete(self, prepared: Prepared, *,
                 objects: bool = True) -> list[ImageFeatures | DupstreamError]:
        """The batch's second half: one embedder call for every picture (with the framed
        pictures' content crops and the turned pictures' upright orientations), the objects
        when ``objects``, and each image's ``ImageFeatures`` (errors stay in place)."""
        decoded, sizes, per_decode = prepared.decoded, prepared.sizes, prepared.decode_ms
        good = prepared.good
        results: list[ImageFeatures | DupstreamError] = list(decoded)  # errors stay in place
        if not good:
            return results
        t1 = time.perf_counter()
        hashed = prepared.hashed
        if hashed is None and self.hash_workers:
            # the hash stage in the pool while the embedder runs on the whole pictures; then
            # the framed pictures' content crops (their boxes come from the hash stage)
            pending = self._pool().submit(self._hash_stage, prepared)
            vectors = self._embed_isolated([decoded[i] for i in good])
            hashed = pending.result()
            framed, turned, crops = _crops(decoded, good, hashed)
            crop_vectors = self._embed_isolated(crops) if crops else []
            embed_ms = (time.perf_counter() - t1) * 1e3
        else:
            # the hash stage (in line, unless ``prepare`` did it), then one embedder batch of
            # every image, the framed pictures' content crops and the turned pictures' upright
            # orientations
            if hashed is None:
                hashed = self._hash_stage(prepared)
            t_embed = time.perf_counter()
            framed, turned, crops = _crops(decoded, good, hashed)
            vectors = self._embed_isolated([decoded[i] for i in good] + crops)
            vectors, crop_vectors = vectors[: len(good)], vectors[len(good):]
            embed_ms = (time.perf_counter() - t_embed) * 1e3
        content = dict(zip(framed, crop_vectors[: len(framed)], strict=True))
        turns = {i: crop_vectors[len(framed) + 4 * j : len(framed) + 4 * j + 4]
                 for j, i in enumerate(turned)}
        t2 = time.perf_counter()
        images = [decoded[i] for i in good]
        found = self.detect(images) if objects else [None] * len(images)
        t3 = time.perf_counter()
        graphs = self.embed_graphs(found) if objects else None
        t4 = time.perf_counter()
        ran = objects and self.detector is not None
        n = len(good)
        for j, i in enumerate(good):
            vec = vectors[j]
            if isinstance(vec, DupstreamError):
                results[i] = vec
                continue
            rgb = decoded[i]
            hs = hashed[i]
            h, w = rgb.shape[:2]
            width, height = (sizes[i] if sizes is not None and sizes[i] is not None else (w, h))
            box = hs.box
            if box is not None and (width, height) != (w, h):  # draft pixels -> the picture's
                fx, fy = width / w, height / h
                box = (int(box[0] * fx), int(box[1] * fy), min(width, round(box[2] * fx)),
                       min(height, round(box[3] * fy)))
            cvec = content.get(i, vec)
            if isinstance(cvec, DupstreamError):  # the crop broke the model: the whole image
                cvec = vec
            tvecs = turns.get(i)
            if tvecs is not None and any(isinstance(t, DupstreamError) for t in tvecs):
                tvecs = None
            results[i] = ImageFeatures(
                digest=hs.digest,
                pdq=hs.pdq,
                vector=np.asarray(vec, dtype=np.float32),
                width=int(width),
                height=int(height),
                thumb=hs.thumb,
                content=np.asarray(cvec, dtype=np.float32),
                content_box=box,
                content_turns=(None if tvecs is None
                               else np.asarray(np.stack(tvecs), dtype=np.float32)),
                reg=hs.reg,
                reg_jpeg=hs.reg_jpeg,
                descriptors=hs.descriptors,
                obj_thumb=hs.obj_thumb,
                timings_ms={
                    "decode": per_decode[i],
                    "hash": hs.ms,
                    "embed": embed_ms / n,
                    **({"detect": (t3 - t2) * 1e3 / n} if ran else {}),
                    **({"graph": (t4 - t3) * 1e3 / n}
                       if ran and self.graph_encoder is not None else {}),
                },
                objects=found[j],
                semantic=None if found[j] is None else semantic_vector(found[j]),
                graph=None if graphs is None or found[j] is None else graphs[j],
            )
        return results

    def add_objects(self, feats: Sequence[ImageFeatures]) -> int:
        """The cascade's late object step: objects (and their semantic vector and graph) for the
        features that have none yet, found on their colour object thumbnail (the registration
        thumbnail, grey, for records older than it), one detector and one GCN call for all.
        Returns how many were computed; a detector failure leaves ``objects`` None."""
        if self.detector is None:
            return 0
        todo, images = [], []
        for f in feats:
            if f.objects is not None or any(f is t for t in todo):
                continue
            pic = f.obj_thumb
            if pic is None and f.obj_jpeg is not None and len(f.obj_jpeg):
                bgr = cv2.imdecode(np.asarray(f.obj_jpeg, np.uint8), cv2.IMREAD_COLOR)
                pic = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if pic is None:
                pic = f.reg
            if pic is None:
                continue
            if pic.ndim == 2:
                pic = np.repeat(pic[..., None], 3, axis=2)
            todo.append(f)
            images.append(np.ascontiguousarray(pic))
        if not todo:
            return 0
        t0 = time.perf_counter()
        found = self.detect(images)
        t1 = time.perf_counter()
        graphs = self.embed_graphs(found)
        t2 = time.perf_counter()
        for j, f in enumerate(todo):
            f.objects = found[j]
            f.semantic = None if found[j] is None else semantic_vector(found[j])
            f.graph = None if graphs is None or found[j] is None else graphs[j]
            f.timings_ms["detect"] = (t1 - t0) * 1e3 / len(todo)
            if self.graph_encoder is not None:
                f.timings_ms["graph"] = (t2 - t1) * 1e3 / len(todo)
        return len(todo)

    def _pool(self) -> ThreadPoolExecutor:
        if self._hash_pool is None:
            self._hash_pool = ThreadPoolExecutor(max_workers=self.hash_workers,
                                                 thread_name_prefix="dupstream-hash")
            # its threads end with the extractor, not only at interpreter exit
            weakref.finalize(self, self._hash_pool.shutdown, wait=False)
        return self._hash_pool

    def _embed_isolated(self, images: list[np.ndarray]) -> list:
        """Vectors, or the ModelError of the image that broke the embedder."""
        return _isolated(self.embedder.embed, images, on_error=lambda exc: exc)

    def detect(self, images: Sequence[np.ndarray]) -> list[Objects | None]:
        """Top-K objects per image (one detector call for the batch); None where it failed."""
        if self.detector is None:
            return [None] * len(images)
        dets = _isolated(self.detector.detect, images, on_error=lambda exc: None)
        return [
            None if d is None else select_objects(im, d, k=self.top_k)
            for im, d in zip(images, dets, strict=True)
        ]

    def embed_graphs(self, objects: Sequence[Objects | None]) -> list[np.ndarray | None] | None:
        """One graph embedding per image (one GCN call for the batch); None where it failed."""
        if self.graph_encoder is None:
            return None
        graphs = [o if o is not None else Objects.empty() for o in objects]
        return _isolated(self.graph_encoder.embed, graphs, on_error=lambda exc: None)

    def warm_up(self) -> dict[str, str]:
        """Load and verify every configured model (weights checked against their sha256) and run
        each once on a synthetic probe, so a deployment fault fails here, at start.

        Raises ``WeightsError`` / ``ConfigError`` / ``ModelError`` (a model that cannot run even
        on the probe is broken for every image). Returns ``{component: model name}``."""
        probe = _probe_image()
        loaded: dict[str, str] = {}
        _load("embedder", self.embedder)
        vec = _run("embedder", self.embedder, lambda: self.embedder.embed([probe]))
        vec = np.asarray(vec)
        if vec.shape != (1, self.embedder.dim) or not np.all(np.isfinite(vec)):
            raise ModelError(f"embedder {self.embedder.name}: probe gave shape {vec.shape}, "
                             f"expected (1, {self.embedder.dim}) finite values")
        loaded["embedder"] = self.embedder.name
        if self.detector is not None:
            _load("detector", self.detector)
            _run("detector", self.detector, lambda: self.detector.detect([probe]))
            loaded["detector"] = self.detector.name
        if self.graph_encoder is not None:
            _load("graph encoder", self.graph_encoder)
            g = _run("graph encoder", self.graph_encoder,
                     lambda: self.graph_encoder.embed([_probe_objects()]))
            if not np.all(np.isfinite(np.asarray(g))):
                raise ModelError(f"graph encoder {self.graph_encoder.name}: non-finite output")
            loaded["graph"] = self.graph_encoder.name
        return loaded


def _raise_if_fatal(exc: BaseException) -> None:
    """Deployment faults (weights, configuration) are never an image's fault."""
    if isinstance(exc, WeightsError | ConfigError):
        raise exc


def _load(what: str, model: object) -> None:
    """``load()`` the model when it has one (every shipped backend does; test doubles may not).
    A load that fails other than with a ``DupstreamError`` is reported as a ``WeightsError``."""
    load = getattr(model, "load", None)
    if not callable(load):
        return
    try:
        load()
    except DupstreamError:
        raise
    except Exception as exc:
        name = getattr(model, "name", type(model).__name__)
        raise WeightsError(f"{what} {name}: weights could not be loaded: "
                           f"{type(exc).__name__}: {exc}") from exc


def _run(what: str, model: object, fn):
    try:
        return fn()
    except DupstreamError:
        raise
    except Exception as exc:  # a backend bug or a broken runtime: as fatal as bad weights
        name = getattr(model, "name", type(model).__name__)
        raise ModelError(f"{what} {name} failed on the warm-up probe: "
                         f"{type(exc).__name__}: {exc}") from exc


def _probe_image(size: int = 160) -> np.ndarray:
    """A deterministic RGB picture with structure (gradients, a disc, a bar)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 1.0 - x * y], axis=2) * 255.0
    img = np.ascontiguousarray(rgb.astype(np.uint8))
    cv2.circle(img, (size // 3, size // 2), size // 5, (220, 40, 40), -1)
    cv2.rectangle(img, (size // 2, size // 4), (size - 10, size // 4 + 20), (20, 20, 200), -1)
    return img


def _probe_objects() -> Objects:
    """Two overlapping objects: enough for a real GCN forward (edges included)."""
    colours = np.full((2, NUM_COLOURS), 1.0 / NUM_COLOURS, np.float32)
    return Objects(boxes=np.array([[0.1, 0.1, 0.6, 0.7], [0.4, 0.3, 0.9, 0.9]], np.float32),
                   labels=np.array([0, 56], np.int64), scores=np.array([0.9, 0.7], np.float32),
                   colours=colours)

