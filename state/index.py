"""Vector index behind a small row-level interface: FAISS (exact or approximate) and a numpy oracle.

Vectors are L2-normalised, so inner product = cosine. An index stores rows in insertion order:
the label FAISS returns *is* the row of the collection's :class:`~state.idmap.IdMap`, so no
``IndexIDMap`` layer (and its per-vector hash map) is needed. Adds are incremental.

Kinds (``IndexSpec.kind``):

- ``flat``: exact ``IndexFlatIP``. 2 KiB per 512-d vector; search is linear in the size.
- ``ivf``: ``IVF{nlist},SQ8`` (or ``Flat``/``SQfp16`` via ``codec``): 8-bit scalar quantised,
  ~4x smaller than flat, search scans ``nprobe`` lists.
- ``ivfpq``: ``IVF{nlist},PQ{m}`` (with an OPQ rotation if ``opq``): ``m`` bytes per vector,
  the 10M-scale option.
- ``hnsw``: ``HNSW{M}`` (flat storage, or ``_SQ8`` with ``codec="SQ8"``): fastest search, largest.
- ``auto``: the same as ``ivf``.
- ``numpy``: the brute-force oracle (:class:`NumpyIndex`), for tests.

Every kind except ``flat`` starts as an exact flat index and switches once it holds
``switch_at`` vectors: the approximate index is trained on those vectors, filled with them in row
order, and from then on every add goes to it (no rebuild). With ``background=True`` the training
runs in a thread while the flat index keeps serving adds and searches; the swap happens on the
next call after it finishes.

Tenant scoping is pushed into FAISS as an ``IDSelectorBitmap`` (see ``IdMap.allowed``); GPU
indexes, which do not take selectors, widen ``k`` and filter afterwards.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.codec import pack, unpack
from dupstream.state.idmap import Allowed

Kind = Literal["auto", "flat", "ivf", "ivfpq", "hnsw", "numpy"]
KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw", "numpy")


@dataclass(frozen=True)
class IndexSpec:
    dim: int
    kind: Kind = "auto"
    #: approximate kinds: stay exact (flat) up to this many vectors, then train and switch
    switch_at: int = 50_000
    #: IVF lists; None = about 4*sqrt(n) at training time, at most n/39 (FAISS's guideline)
    nlist: int | None = None
    nprobe: int = 32
    #: vector storage of ivf / hnsw: "SQ8" | "SQfp16" | "Flat"
    codec: str = "SQ8"
    #: ivfpq: bytes per vector (sub-quantisers), with an OPQ rotation when ``opq``
    pq_m: int = 64
    opq: bool = False
    #: OPQ rotation training iterations (each one trains a PQ: slow on few cores)
    opq_iters: int = 20
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 64
    #: at most this many vectors are used to train (a random sample when more)
    train_max: int = 200_000
    #: None: use the GPU when FAISS has one; False: never; True: require it
    gpu: bool | None = None
    background: bool = False
    #: OpenMP threads while training (0 = every core); searches use the caller's setting
    train_threads: int = 0
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StateError(f"unknown index kind {self.kind!r}; expected one of {KINDS}")
        if self.dim <= 0:
            raise StateError("dim must be positive")
        if self.kind == "ivfpq" and self.dim % self.pq_m:
            raise StateError(f"dim {self.dim} is not a multiple of pq_m {self.pq_m}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@runtime_checkable
class VectorIndex(Protocol):
    """Rows ``0..len-1`` in insertion order; ``search`` returns (scores, rows), -1 = no row."""

    dim: int

    def add(self, vectors: np.ndarray) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, *, allowed: Allowed | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def serialize(self) -> bytes: ...

    def nbytes(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v.reshape(1, -1)
    if v.ndim != 2 or v.shape[1] != dim:
        raise StateError(f"vectors have shape {v.shape}, index expects (n, {dim})")
    if not np.isfinite(v).all():
        raise StateError("vectors contain NaN or infinity")
    return np.ascontiguousarray(v)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def default_nlist(n_train: int) -> int:
    target = 4 * math.sqrt(max(n_train, 1))
    nlist = 2 ** max(4, round(math.log2(target)))
    return int(max(1, min(nlist, 65536, n_train // 39)))


def cores() -> int:
    """CPUs this process may run on (respects affinity / cpusets, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in the calling thread (OpenMP's setting is per thread).

    One small search gains nothing from a thread team, and on a shared or busy machine the team's
    hand-offs cost milliseconds: lookups and adds run with 1 thread, training with all cores.
    """
    if not n:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissIndex:
    """FAISS inner-product index, exact below ``switch_at`` and approximate above (see module)."""

    def __init__(self, spec: IndexSpec) -> None:
        import faiss

        self._faiss = faiss
        self.spec = spec
        self.dim = spec.dim
        self._lock = threading.RLock()
        self._use_gpu = bool(spec.gpu) if spec.gpu is not None else gpu_available()
        if self._use_gpu and not gpu_available():
            raise StateError("gpu=True but FAISS has no GPU (install faiss-gpu and CUDA)")
        self._gpu_res = faiss.StandardGpuResources() if self._use_gpu else None
        self._flat: Any | None = self._to_device(faiss.IndexFlatIP(spec.dim))
        self._approx: Any | None = None
        self._factory: str | None = None
        self._pending: threading.Thread | None = None
        self._built: tuple[Any, int, str] | BaseException | None = None

    # -- construction ------------------------------------------------------------------------
    def _to_device(self, index: Any) -> Any:
        if self._gpu_res is None:
            return index
        try:
            return self._faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        except RuntimeError:  # e.g. HNSW has no GPU version: stay on the CPU
            return index

    def _to_cpu(self, index: Any) -> Any:
        if self._gpu_res is not None and hasattr(self._faiss, "index_gpu_to_cpu"):
            try:
                return self._faiss.index_gpu_to_cpu(index)
            except RuntimeError:
                return index
        return index

    def _factory_string(self, n_train: int) -> str:
        s = self.spec
        kind = "ivf" if s.kind == "auto" else s.kind
        nlist = s.nlist or default_nlist(n_train)
        if kind == "ivf":
            return f"IVF{nlist},{s.codec}"
        if kind == "ivfpq":
            rot = f"OPQ{s.pq_m}_{s.dim}," if s.opq else ""
            return f"{rot}IVF{nlist},PQ{s.pq_m}"
        if kind == "hnsw":
            return f"HNSW{s.hnsw_m}" + ("" if s.codec == "Flat" else f"_{s.codec}")
        raise StateError(f"no approximate index for kind {kind!r}")

    def _train(self, vectors: np.ndarray) -> tuple[Any, int, str]:
        """Train and fill a new approximate index with ``vectors`` (rows 0..m-1); thread-safe."""
        with omp_threads(self.spec.train_threads or cores()):
            return self._train_here(vectors)

    def _train_here(self, vectors: np.ndarray) -> tuple[Any, int, str]:
        faiss = self._faiss
        factory = self._factory_string(len(vectors))
        index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if "HNSW" in factory:
            faiss.downcast_index(index).hnsw.efConstruction = self.spec.ef_construction
        if "PQ" in factory:  # polysemous training (simulated annealing) is slow and unused here
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            ivf.do_polysemous_training = False
        if factory.startswith("OPQ"):
            opq = faiss.downcast_VectorTransform(index.chain.at(0))
            opq.niter = self.spec.opq_iters
        if not index.is_trained:
            sample = vectors
            if len(vectors) > self.spec.train_max:
                rng = np.random.default_rng(self.spec.seed)
                pick = np.sort(rng.choice(len(vectors), self.spec.train_max, replace=False))
                sample = vectors[pick]
            index.train(sample)
        index = self._to_device(index)
        index.add(vectors)
        return index, len(vectors), factory

    def _flat_vectors(self, start: int, stop: int) -> np.ndarray:
        flat = self._flat
        if flat is None or stop <= start:
            return np.zeros((0, self.dim), dtype=np.float32)
        return flat.reconstruct_n(start, stop - start)

    def _maybe_switch(self) -> None:
        """Called under the lock after adds and before searches."""
        if self._approx is not None or self.spec.kind == "flat":
            return
        if self._built is not None:
            built, self._built, self._pending = self._built, None, None
            if isinstance(built, BaseException):
                raise StateError(f"training the approximate index failed: {built}") from built
            index, m, factory = built
            index.add(self._flat_vectors(m, self._flat.ntotal))  # rows added while training
            self._approx, self._factory, self._flat = index, factory, None
            return
        if self._pending is not None or self._flat.ntotal < self.spec.switch_at:
            return
        vectors = self._flat_vectors(0, self._flat.ntotal)
        if not self.spec.background:
            index, m, factory = self._train(vectors)
            self._approx, self._factory, self._flat = index, factory, None
            return

        def work() -> None:
            try:
                result: tuple[Any, int, str] | BaseException = self._train(vectors)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller thread
                result = exc
            with self._lock:
                self._built = result

        self._pending = threading.Thread(target=work, name="faiss-train", daemon=True)
        self._pending.start()

    def wait_trained(self, timeout: float | None = None) -> None:
        """Block until a background switch finished and is swapped in (tests, benchmarks)."""
        t = self._pending
        if t is not None:
            t.join(timeout)
        with self._lock:
            self._maybe_switch()

    # -- the interface -----------------------------------------------------------------------
    @property
    def _live(self) -> Any:
        return self._approx if self._approx is not None else self._flat

    @property
    def approximate(self) -> bool:
        return self._approx is not None

    def __len__(self) -> int:
        return int(self._live.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        v = as_matrix(vectors, self.dim)
        if not len(v):
            return
        with self._lock:
            self._live.add(v)
            self._maybe_switch()

    def _params(self, allowed: Allowed | None) -> Any:
        faiss = self._faiss
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBitmap(allowed.n, faiss.swig_ptr(allowed.bitmap))
        if self._approx is None:
            return faiss.SearchParameters(sel=sel) if sel is not None else None
        if "HNSW" in (self._factory or ""):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=self.spec.ef_search)
        return faiss.SearchParametersIVF(sel=sel, nprobe=self.spec.nprobe)

    def search(
        self, queries: np.ndarray, k: int, *, allowed: Allowed | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim)
        with self._lock:
            self._maybe_switch()
            index = self._live
            n = int(index.ntotal)
            if k <= 0 or n == 0 or (allowed is not None and allowed.n == 0):
                return _empty(len(q), max(k, 0))
            kk = min(k, n)
            if self._gpu_res is not None and not isinstance(index, self._faiss.IndexHNSW):
                return self._search_post_filter(index, q, k, allowed)
            params = self._params(allowed)
            scores, rows = index.search(q, kk, params=params)
        if kk < k:
            pad_s, pad_r = _empty(len(q), k - kk)
            scores, rows = np.hstack([scores, pad_s]), np.hstack([rows, pad_r])
        return scores, rows

    def _search_post_filter(
        self, index: Any, q: np.ndarray, k: int, allowed: Allowed | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """GPU path: no selectors there, so widen k and filter (k is capped at 2048 on GPU)."""
        if self._approx is not None:
            self._faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.spec.nprobe)
        n = int(index.ntotal)
        mask = allowed.mask(n) if allowed is not None else None
        out_s, out_r = _empty(len(q), k)
        want = k
        while True:
            kk = min(n, want, 2048)
            scores, rows = index.search(q, kk)
            done = True
            for i in range(len(q)):
                r = rows[i]
                keep = r >= 0
                if mask is not None:
                    keep &= mask[np.clip(r, 0, n - 1)]
                got = np.flatnonzero(keep)[:k]
                out_s[i, : len(got)], out_r[i, : len(got)] = scores[i, got], r[got]
                done &= len(got) >= k
            if done or kk >= min(n, 2048):
                return out_s, out_r
            want *= 4

    def nbytes(self) -> int:
        with self._lock:
            return _index_nbytes(self._faiss, self._to_cpu(self._live), self.dim)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "type": "faiss",
                "kind": self.spec.kind,
                "stage": "approx" if self._approx is not None else "flat",
                "factory": self._factory or "Flat",
                "training": self._pending is not None,
                "gpu": self._gpu_res is not None,
                "ntotal": len(self),
                "nbytes": self.nbytes(),
            }

    def serialize(self) -> bytes:
        with self._lock:
            cpu = self._to_cpu(self._live)
            blob = self._faiss.serialize_index(cpu)
            return pack(
                {
                    "type": "faiss",
                    "spec": self.spec.to_dict(),
                    "factory": self._factory,
                    "index": blob.tobytes(),
                }
            )

    @classmethod
    def from_state(cls, state: dict[str, Any], *, gpu: bool | None = None) -> FaissIndex:
        import faiss

        spec = IndexSpec.from_dict(state["spec"])
        if gpu is not None:
            spec = replace(spec, gpu=gpu)
        self = cls(spec)
        try:
            index = faiss.deserialize_index(np.frombuffer(state["index"], dtype=np.uint8))
        except RuntimeError as exc:
            raise StateError(f"FAISS could not read the index: {exc}") from exc
        if index.d != spec.dim:
            raise StateError(f"stored index has dimension {index.d}, spec says {spec.dim}")
        if state.get("factory"):
            self._approx, self._factory, self._flat = self._to_device(index), state["factory"], None
        else:
            self._flat = self._to_device(index)
        return self


def _index_nbytes(faiss: Any, index: Any, dim: int) -> int:
    """Resident bytes of the vectors and their structure (codes, ids, graph, centroids)."""
    n = int(index.ntotal)
    inner = index
    if isinstance(index, faiss.IndexPreTransform):
        inner = faiss.downcast_index(index.index)
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(inner)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        per = ivf.code_size + 8  # code + stored id in the inverted list
        return n * per + ivf.nlist * dim * 4 + 2 * dim * dim * 4 * isinstance(
            index, faiss.IndexPreTransform
        )
    if isinstance(inner, faiss.IndexHNSW):
        storage = faiss.downcast_index(inner.storage)
        return n * storage.sa_code_size() + inner.hnsw.neighbors.size() * 4 + n * 12
    return n * dim * 4


class NumpyIndex:
    """Brute-force oracle: the reference the FAISS index is tested against."""

    def __init__(self, *, dim: int) -> None:
        self.dim = dim
        self._chunks: list[np.ndarray] = []
        self._matrix = np.zeros((0, dim), dtype=np.float32)

    def _all(self) -> np.ndarray:
        if self._chunks:
            self._matrix = np.concatenate([self._matrix, *self._chunks])
            self._chunks = []
        return self._matrix

    def __len__(self) -> int:
        return len(self._matrix) + sum(len(c) for c in self._chunks)

    def add(self, vectors: np.ndarray) -> None:
        self._chunks.append(as_matrix(vectors, self.dim).copy())

    def search(
        self, queries: np.ndarray, k: int, *, allowed: Allowed | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim)
        x = self._all()
        out_s, out_r = _empty(len(q), max(k, 0))
        if k <= 0 or not len(x):
            return out_s, out_r
        scores = q @ x.T
        if allowed is not None:
            scores[:, ~allowed.mask(len(x))] = -np.inf
        for i in range(len(q)):
            order = np.argsort(-scores[i], kind="stable")[:k]
            order = order[np.isfinite(scores[i, order])]
            out_s[i, : len(order)], out_r[i, : len(order)] = scores[i, order], order
        return out_s, out_r

    def nbytes(self) -> int:
        return len(self) * self.dim * 4

    def describe(self) -> dict[str, Any]:
        return {"type": "numpy", "kind": "flat", "ntotal": len(self), "nbytes": self.nbytes()}

    def serialize(self) -> bytes:
        return pack({"type": "numpy", "dim": self.dim, "vectors": self._all()})

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NumpyIndex:
        self = cls(dim=int(state["dim"]))
        self._matrix = as_matrix(state["vectors"], self.dim) if len(state["vectors"]) else (
            self._matrix
        )
        return self


def build_index(*, dim: int, kind: Kind = "auto", **options: Any) -> VectorIndex:
    """A new empty index. ``kind="numpy"`` gives the brute-force oracle; options: ``IndexSpec``."""
    if kind == "numpy":
        return NumpyIndex(dim=dim)
    return FaissIndex(IndexSpec(dim=dim, kind=kind, **options))


def load_index(data: bytes, *, gpu: bool | None = None) -> VectorIndex:
    """Inverse of ``serialize()`` (FAISS's own format inside msgpack; no pickle)."""
    state = unpack(data)
    if not isinstance(state, dict):
        raise StateError("index blob is not a map")
    kind = state.get("type")
    if kind == "faiss":
        return FaissIndex.from_state(state, gpu=gpu)
    if kind == "numpy":
        return NumpyIndex.from_state(state)
    raise StateError(f"unknown index type {kind!r}")
