"""The de-duplication engine: features from ``workers``, memory from ``state``, one verdict each.

Used identically by the streaming service, ``dupstream scan`` and the evaluation. Images of one
batch are matched against each other too: each is judged, then added, in order.

State lives in a ``state.memory.Memory``: candidates come from its exact, PDQ and vector lookups
(tenant-scoped, plus reference banks), and are re-scored with their compact records (a bounded
LRU over an optional stored form). ``on_add`` is called with every record this engine adds, for
the stream to publish to the index-updates topic; ``on_replay`` with the record of an image whose
key was already present (an event read again after a failed delivery, a kill or a rebalance): its
first publication may never have been acknowledged, so the stream publishes it again (replicas
apply a present key as a no-op).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dupstream import __version__
from dupstream.core.errors import ConfigError, DupstreamError, WeightsError
from dupstream.core.verdict import Evidence, Verdict
from dupstream.engine.records import (
    OBJECT_FIELDS,
    features_to_record,
    object_fields,
    record_to_features,
)
from dupstream.engine.verification import Scored, best_match, verify_candidates
from dupstream.state.identity import ModelIdentity
from dupstream.state.memory import Applied, Candidate, Memory, MemoryConfig
from dupstream.state.records import ImageRecord
from dupstream.workers.decision import DecisionPolicy
from dupstream.workers.features import FeatureExtractor, ImageFeatures
from dupstream.workers.hashing import content_hash
from dupstream.workers.similarity import NO_DETECTOR_NOTE, PairScore, score_pair, with_objects


@dataclass(frozen=True)
class Upload:
    image_id: str
    data: bytes
    tenant: str | None = None


@dataclass(frozen=True)
class Failed:
    image_id: str
    tenant: str | None
    error: DupstreamError


@dataclass(frozen=True)
class Extracted:
    """An upload's features, extracted ahead of its judging (``Deduper.extract_ahead``): the
    SHA-256 of its bytes, and its features - or the error of the image that failed, or None
    where the memory already had these bytes when they were extracted (the fast path is then
    expected to answer; if it does not, ``process`` extracts them). ``ms``: the extraction's
    wall time per image."""

    digest: str
    features: ImageFeatures | DupstreamError | None
    ms: float = 0.0


#: the note of a copy whose objects the cascade did not look for (instead of NO_DETECTOR_NOTE)
OBJECTS_SKIPPED = ("object detection skipped: the same picture, or a registration with nothing "
                   "changed in the overlap")
SAME_SCENE_NOTE = ("same scene: the content registers, but what changed inside the overlap "
                   "makes it another photo or moment, not a copy")
LOW_INFORMATION_NOTE = ("low-information picture (nearly all flat, or no usable PDQ hash): a "
                        "copy only by its bytes or a near-identical PDQ hash")


#: another candidate than the nearest is named as the scene only when the pictures themselves
#: (without frames) look alike: a registration can latch onto one identical frame worn by two
#: different photos (the retrieval bench's frame traps: content cosine 0.10 and 0.44; its
#: same-scene photographs 0.33-0.90, the one named this way 0.83)
SCENE_ELSEWHERE_MIN_CONTENT = 0.5


def _picture_alike(score: PairScore) -> bool:
    content = score.visual if score.content is None else score.content
    return content >= SCENE_ELSEWHERE_MIN_CONTENT


@dataclass
class _Pending:
    """A verdict waiting for the cascade's object step: its query and the matched candidate."""

    verdict: Verdict
    query: ImageFeatures
    best: Scored

    @property
    def query_key(self) -> tuple:
        return (None, self.verdict.tenant, self.verdict.image_id)


def _copy_objects(src: ImageFeatures, dst: ImageFeatures) -> None:
    if dst is not src and dst.objects is None:
        dst.objects, dst.semantic, dst.graph = src.objects, src.semantic, src.graph


class Deduper:
    def __init__(
        self,
        *,
        extractor: FeatureExtractor,
        policy: DecisionPolicy,
        memory: Memory | None = None,
        candidates: int = 10,
        verify_top: int = 3,
        on_add: Callable[[ImageRecord], None] | None = None,
        on_replay: Callable[[ImageRecord], None] | None = None,
        cascade: bool = True,
    ) -> None:
        self.extractor = extractor
        self.memory = memory if memory is not None else Memory(MemoryConfig())
        self.policy = policy
        self.candidates = candidates
        #: at most this many registrations per query (verification stage)
        self.verify_top = verify_top
        self.on_add = on_add
        self.on_replay = on_replay
        #: the cascade: objects (detector + GCN) only for images whose verdict is a copy, whose
        #: tenant's policy needs them, or when the decision reads them (``reads_objects``); a
        #: reference's objects when a later query first needs them (kept in its record)
        self.cascade = cascade
        cal = hashlib.sha256(policy.calibrator.to_json().encode()).hexdigest()[:8]
        det = extractor.detector.name if extractor.detector is not None else "nodet"
        graph = "gcn" if extractor.graph_encoder is not None else "nogcn"
        learned = f"/{policy.learned.version}" if policy.learned is not None else ""
        self.model_version = (
            f"dupstream-{__version__}/{extractor.embedder.name}/{det}/{graph}/cal-{cal}{learned}"
        )
        # the memory holds this model's vectors from now on: a memory restored from another
        # model's snapshot is refused here (ModelMismatch), before anything is judged
        self.memory.bind(self.identity)
        self._warm: dict[str, object] | None = None

    def use_memory(self, memory: Memory) -> Deduper:
        """Judge against ``memory`` from now on (e.g. the snapshot restored after the models were
        warmed up). Raises ``ModelMismatch`` when it holds another model's vectors."""
        memory.bind(self.identity)
        self.memory = memory
        return self

    @property
    def identity(self) -> ModelIdentity:
        """What persisted state records about the model: embedder, its weights' sha256 (the
        descriptor's, which ``load`` enforces), the model version."""
        embedder = self.extractor.embedder
        descriptor = getattr(embedder, "descriptor", None)
        return ModelIdentity(embedder=embedder.name,
                             embedder_sha256=getattr(descriptor, "sha256", None),
                             model_version=self.model_version)

    def warm_up(self) -> dict[str, object]:
        """Load and verify everything configured before the first event: every model's weights
        against their sha256 (embedder, detector, GCN; each run once on a probe), the calibration
        and decision artefacts (each domain's calibrator and cut-offs evaluated), and the memory's
        vector dimension against the embedder's.

        Raises ``WeightsError`` / ``ModelError`` (exit code 4 from ``dupstream run``) or
        ``ConfigError``; returns what was checked (logged by the caller). The models are probed
        once; a later call re-checks only the memory."""
        if self._warm is None:
            self._warm = {**self.extractor.warm_up(), "decision": self._check_policy()}
        loaded = dict(self._warm)
        dim = self.extractor.embedder.dim
        spec = self.memory.config.vectors.get("vector")
        if spec is not None and spec.dim != dim:
            raise ConfigError(f"the index holds {spec.dim}-d vectors but embedder "
                              f"{self.extractor.embedder.name} gives {dim}-d ones")
        loaded["model"] = self.identity.to_dict()
        return loaded

    def _check_policy(self) -> list[str]:
        """Every calibrator and cut-off of the policy gives a probability / cut-off in [0, 1] for
        every configured domain and preference: a malformed artefact fails here, not per event."""
        from dupstream.workers.decision import PREFERENCES

        policy = self.policy
        scores = np.linspace(-1.0, 1.0, 21)
        domains = {None, policy.domain, *policy.tenant_domains.values()}
        if policy.cutoffs is not None:
            domains |= set(policy.cutoffs.domains) | set(policy.cutoffs.calibrators)
        checked = []
        for domain in sorted(domains, key=lambda d: d or ""):
            name = domain or "default"
            try:
                cal = (policy.cutoffs.calibrator(domain) if policy.cutoffs is not None
                       else None) or policy.calibrator
                p = np.asarray(cal(scores), dtype=np.float64)
                cuts = ([policy.cutoffs.for_domain(domain).cut(pref) for pref in PREFERENCES]
                        if policy.cutoffs is not None else [policy.p_copy_min])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise WeightsError(f"calibration/decision artefact for domain {name}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            if p.shape != scores.shape or not np.all((p >= 0) & (p <= 1)):
                raise WeightsError(f"calibration for domain {name} gives values outside [0, 1]")
            if not all(0.0 <= c <= 1.0 for c in cuts):
                raise WeightsError(f"decision cut-offs for domain {name} outside [0, 1]: {cuts}")
            checked.append(name)
        if policy.learned is not None:
            checked.append(self._check_learned())
        return checked

    def _check_learned(self) -> str:
        """The learned decision model gives a probability in [0, 1] and finite cut-offs on a
        probe (all features missing, then all zero)."""
        model = self.policy.learned
        probe = np.stack([np.full(len(model.features), np.nan), np.zeros(len(model.features))])
        try:
            p = model.p_copy_matrix(probe)
            cuts = [model.cut(pref) for pref in ("balanced", "precision", "recall")]
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"decision model {model.version}: {type(exc).__name__}: "
                               f"{exc}") from exc
        if not np.all((p >= 0) & (p <= 1)) or not all(0.0 <= c <= 1.0 for c in cuts):
            raise WeightsError(f"decision model {model.version} gives values outside [0, 1]")
        return f"learned {model.version}"

    def __len__(self) -> int:
        return len(self.memory)

    def process(self, uploads: Sequence[Upload], *, add: bool = True,
                extracted: Sequence[Extracted | None] | None = None) -> list[Verdict | Failed]:
        """Judge each upload against everything seen before it (earlier batch members included).

        ``extracted``: per upload, what ``extract_ahead`` gave for it (None: nothing); its
        digest and features are used instead of extracting again - the verdicts are the same.
        The exact-hash fast path is decided here, whatever was extracted ahead."""
        t0 = time.perf_counter()
        given = list(extracted) if extracted is not None else [None] * len(uploads)
        if len(given) != len(uploads):
            raise ValueError(f"{len(given)} extracted for {len(uploads)} uploads")
        # the SHA-256 of a blob is computed once: ahead, or here
        digests = [e.digest if e is not None else content_hash(u.data)
                   for u, e in zip(uploads, given, strict=True)]
        fast = self._fast_hits(uploads, digests)
        hash_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(uploads))
        have = {i: e.features for i, e in enumerate(given)
                if i not in fast and e is not None and e.features is not None}
        spent = sum(given[i].ms for i in have) / 1e3
        late = [i for i in range(len(uploads)) if i not in fast and i not in have]
        if late:  # not extracted ahead, or skipped there as known and not answered by bytes
            t1 = time.perf_counter()
            feats = self.extractor.extract([uploads[i].data for i in late],
                                           objects=not self.lazy_objects,
                                           digests=[digests[i] for i in late])
            have.update(zip(late, feats, strict=True))
            spent += time.perf_counter() - t1
        features = [have.get(i) if i not in fast else None for i in range(len(uploads))]
        return self._conclude(uploads, fast, features, hash_ms=hash_ms,
                              per_image_ms=spent * 1e3 / max(1, len(uploads) - len(fast)),
                              add=add)

    def extract_ahead(self, uploads: Sequence[Upload]) -> list[Extracted]:
        """The features of a batch before it is judged (no memory is written; safe beside a
        ``process`` of an earlier batch in another thread: the memory's lookups take its lock).
        Bytes the memory already holds are not extracted: the fast path will answer them. A
        deployment fault is raised; a failing image comes back as its error in place."""
        digests, rest = self._to_extract(uploads)
        return self._extracted(uploads, digests, rest, self._prepare(uploads, digests, rest))

    def _to_extract(self, uploads: Sequence[Upload], seen: Container[str] = frozenset()
                    ) -> tuple[list[str], list[int]]:
        """The uploads' SHA-256, and the positions of those to extract ahead: not the bytes the
        memory (or ``seen``: an earlier batch not judged yet) already holds."""
        digests = [content_hash(u.data) for u in uploads]
        rest = [i for i, (u, d) in enumerate(zip(uploads, digests, strict=True))
                if not (u.data and (d in seen or self._exact_candidates(u, d)))]
        return digests, rest

    def _prepare(self, uploads: Sequence[Upload], digests: Sequence[str], rest: list[int]):
        """The model-free half of extraction (decode, hashes) of the uploads at ``rest``."""
        t0 = time.perf_counter()
        prepared = (self.extractor.prepare([uploads[i].data for i in rest],
                                           digests=[digests[i] for i in rest])
                    if rest else None)
        return prepared, time.perf_counter() - t0

    def _extracted(self, uploads: Sequence[Upload], digests: Sequence[str], rest: list[int],
                   prepared_in: tuple) -> list[Extracted]:
        """The model half (``FeatureExtractor.complete``) after ``_prepare``: one ``Extracted``
        per upload (features None where not extracted)."""
        prepared, spent = prepared_in
        t0 = time.perf_counter()
        feats = (self.extractor.complete(prepared, objects=not self.lazy_objects)
                 if prepared is not None else [])
        ms = (spent + time.perf_counter() - t0) * 1e3 / max(1, len(rest))
        by = dict(zip(rest, feats, strict=True))
        return [Extracted(d, by.get(i), ms if i in by else 0.0) for i, d in enumerate(digests)]

    def process_many(self, batches: Iterable[Sequence[Upload]], *, add: bool = True,
                     ahead: int = 2) -> Iterator[list[Verdict | Failed]]:
        """``process`` of each batch in turn - the same verdicts, in the same order - with the
        work that needs no memory overlapped: while batch k is judged (search, verification, the
        cascade's object step: they read what batch k-1 added), batch k+1 is embedded in one
        thread and the next batch decoded and hashed in another (``ahead``: batches read ahead
        of the one judged, >= 1). On 2 cores this keeps both busy where ``process`` leaves one
        idle while it searches and verifies (docs/PERFORMANCE.md, overlap).

        The exact-hash fast path is still decided when the batch is judged. A blob whose bytes an
        earlier batch of this call, or the memory, already has is not embedded ahead (it will
        be answered from the stored record); should it not be after all, it is extracted then.
        An error of a stage (a deployment fault, say) is raised when its batch is reached;
        closing the iterator early stops the threads."""
        if ahead < 1:
            raise ConfigError(f"ahead must be >= 1, got {ahead}")
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        seen: set[str] = set()  # digests of earlier batches (prepare runs them in order)

        def prepare(uploads: list[Upload]):
            digests, rest = self._to_extract(uploads, seen)
            if add:
                seen.update(digests)
            return digests, rest, self._prepare(uploads, digests, rest)

        def complete(uploads: list[Upload], prepared_future):
            digests, rest, prepared = prepared_future.result()
            return self._extracted(uploads, digests, rest, prepared)

        pools = (ThreadPoolExecutor(1, thread_name_prefix="dupstream-prepare"),
                 ThreadPoolExecutor(1, thread_name_prefix="dupstream-embed"))
        inflight: deque = deque()
        source = iter(batches)

        def submit() -> bool:
            uploads = next(source, None)
            if uploads is None:
                return False
            uploads = list(uploads)
            prepared = pools[0].submit(prepare, uploads)
            inflight.append((uploads, pools[1].submit(complete, uploads, prepared)))
            return True

        try:
            while len(inflight) < ahead + 1 and submit():
                pass
            while inflight:
                uploads, done = inflight.popleft()
                extracted = done.result()
                submit()
                yield self.process(uploads, add=add, extracted=extracted) if uploads else []
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)

    def _exact_candidates(self, upload: Upload, digest: str) -> list[Candidate]:
        """The memory's images with these bytes, as the fast path looks them up."""
        if not upload.data:
            return []
        probe = ImageRecord(upload.image_id, upload.tenant, digest,
                            np.zeros((0, 32), np.uint8), meta={"pdq_quality": 0})
        return [c for c in self.memory.candidates(probe, k=1) if c.source == "exact"]

    def _fast_hits(self, uploads: Sequence[Upload], digests: Sequence[str]
                   ) -> dict[int, tuple[Verdict, ImageFeatures]]:
        return {i: hit for i, u in enumerate(uploads)
                if (hit := self._fast_path(u, digests[i])) is not None}

    def _conclude(self, uploads: Sequence[Upload], fast: dict, features: list, *,
                  hash_ms: float, per_image_ms: float, add: bool) -> list[Verdict | Failed]:
        """The verdicts of a batch whose features are extracted (None for fast-path hits):
        judged in order, each added before the next is judged, then the cascade's object step
        once for the batch."""
        out: list[Verdict | Failed] = []
        pending: list[tuple[int, _Pending]] = []
        for i, (upload, feat) in enumerate(zip(uploads, features, strict=True)):
            if i in fast:
                verdict, ref_feat = fast[i]
                verdict.timings_ms["hash"] = round(hash_ms, 3)
                verdict.timings_ms["total"] = verdict.timings_ms["hash"]
                verdict.evidence.cascade = ["exact"]
                if add:  # the same bytes: the same features, no model needed
                    self.add(upload.image_id, upload.tenant, ref_feat)
                out.append(verdict)
                continue
            if isinstance(feat, DupstreamError):
                out.append(Failed(upload.image_id, upload.tenant, feat))
                continue
            t1 = time.perf_counter()
            # one record per image: the query of the search, then the indexed image
            rec = features_to_record(upload.image_id, upload.tenant, feat)
            verdict, todo = self._judge(upload.image_id, upload.tenant, feat, record=rec)
            if todo is not None:
                pending.append((len(out), todo))
            search_ms = (time.perf_counter() - t1) * 1e3
            verdict.timings_ms.update({k: round(v, 3) for k, v in feat.timings_ms.items()})
            verdict.timings_ms["search"] = round(search_ms, 3)
            verdict.timings_ms["total"] = round(per_image_ms + search_ms, 3)
            if add:
                self._add_record(rec)
            out.append(verdict)
        if pending:  # the cascade's object step, once for the batch
            for (slot, _), v in zip(pending, self._objects_step([p for _, p in pending],
                                                                keep_queries=add),
                                    strict=True):
                if "objects" in v.timings_ms:
                    v.timings_ms["total"] = round(v.timings_ms.get("total", 0.0)
                                                  + v.timings_ms["objects"], 3)
                out[slot] = v
        return out

    def _fast_path(self, upload: Upload, digest: str) -> tuple[Verdict, ImageFeatures] | None:
        """Byte-identical to an indexed image: answer from the stored record, skip the models."""
        for cand in self._exact_candidates(upload, digest):
            ref = self.memory.record(cand.key)
            if ref is None:
                continue
            feat = record_to_features(ref)
            verdict = self._verdict(
                upload.image_id, upload.tenant, cand.image_id, cand.tenant, cand.bank,
                score_pair(feat, feat), query=feat, reference=feat,
                notes=["fast path: byte-identical to an indexed image, models skipped"])
            return verdict, feat
        return None

    @property
    def lazy_objects(self) -> bool:
        """Objects are found late (the cascade), not for every image at extraction."""
        return (self.cascade and self.extractor.detector is not None
                and not self.policy.reads_objects)

    def add(self, image_id: str, tenant: str | None, feat: ImageFeatures) -> ImageRecord | None:
        """Remember an image; returns its record when new (and hands it to ``on_add``). A key
        already present is a replay: nothing is added, its record (the one in memory when it is
        still there) goes to ``on_replay``."""
        return self._add_record(features_to_record(image_id, tenant, feat))

    def _add_record(self, rec: ImageRecord) -> ImageRecord | None:
        if not self.memory.add(rec):
            if self.on_replay is not None:
                self.on_replay(self.memory.records.peek(rec.key) or rec)
            return None
        if self.on_add is not None:
            self.on_add(rec)
        return rec

    def judge(self, image_id: str, tenant: str | None, feat: ImageFeatures) -> Verdict:
        """The verdict for one image against the memory (the cascade's object step included)."""
        verdict, pending = self._judge(image_id, tenant, feat)
        if pending is None:
            return verdict
        return self._objects_step([pending], keep_queries=False)[0]

    def _judge(self, image_id: str, tenant: str | None, feat: ImageFeatures, *,
               record: ImageRecord | None = None) -> tuple[Verdict, _Pending | None]:
        """The verdict before the cascade's object step, and that step's work when the tenant's
        policy needs objects, or the verdict is a copy whose objects would tell what changed
        (``DecisionPolicy.needs_object_evidence``; ``_objects_step`` does it, for a batch)."""
        query = record if record is not None else features_to_record(image_id, tenant, feat)
        scored: list[Scored] = []
        for cand in self._candidates(query, feat):
            # the query's own key is never a candidate: a replayed event does not match itself
            ref = self.memory.record(cand.key)
            if ref is None:
                continue
            ref_feat = record_to_features(ref)
            scored.append(Scored(cand, ref_feat, score_pair(feat, ref_feat)))
        stats = verify_candidates(self.policy, feat, scored, top=self.verify_top)
        best = best_match(self.policy, scored, tenant, query=feat)
        stages = ["exact", "embed", "search"] + (["verify"] if stats.runs else [])
        if not self.lazy_objects and self.extractor.detector is not None:
            stages.append("objects")
        if best is None:
            return Verdict(
                image_id=image_id,
                tenant=tenant,
                verdict="unique",
                probability=1.0,
                evidence=Evidence(notes=["no candidate in the index"], cascade=stages),
                model_version=self.model_version,
                replica=self.memory.replica_id,
            ), None
        verdict = self._verdict(image_id, tenant, best.candidate.image_id, best.candidate.tenant,
                                best.candidate.bank, best.score, query=feat,
                                reference=best.reference)
        verdict.timings_ms["verify"] = round(stats.ms, 3)
        self._scene_elsewhere(verdict, scored, best, feat)
        verdict.evidence.verifications = stats.runs
        verdict.evidence.cascade = stages
        if self.lazy_objects and self.policy.needs_objects(tenant):
            return verdict, _Pending(verdict, feat, best)
        if self.lazy_objects and verdict.verdict != "unique":
            if self.policy.needs_object_evidence(best.score):
                return verdict, _Pending(verdict, feat, best)
            verdict.evidence.notes = [*(n for n in verdict.evidence.notes
                                        if n != NO_DETECTOR_NOTE), OBJECTS_SKIPPED]
        return verdict, None

    def _scene_elsewhere(self, verdict: Verdict, scored: list[Scored], best: Scored,
                         feat: ImageFeatures) -> None:
        """A unique verdict names the scene it shows: ``same_scene_id`` is the nearest image
        when that pair is another photo of the scene, else the most similar other registered
        candidate that is and whose picture looks alike (``_picture_alike``: the nearest by
        P(copy) can be an unrelated picture while the scene's photo, registered, ranks below
        it)."""
        if verdict.verdict != "unique":
            return
        if verdict.evidence.same_scene:
            verdict.evidence.same_scene_id = best.candidate.image_id
            return
        scene = [s for s in scored if s is not best and s.score.registration is not None
                 and _picture_alike(s.score)
                 and self.policy.same_scene(s.score, "unique", feat, s.reference)]
        if scene:
            other = max(scene, key=lambda s: s.score.visual_best)
            verdict.evidence.same_scene = True
            verdict.evidence.same_scene_id = other.candidate.image_id

    def _candidates(self, query: ImageRecord, feat: ImageFeatures) -> list[Candidate]:
        """The memory's candidates for the query; for a picture turned on a solid fill also
        those of its four upright orientations (``ImageFeatures.content_turns``: searched as
        whole pictures, where an unturned original is indexed), the first occurrence kept."""
        found = self.memory.candidates(query, k=self.candidates)
        if feat.content_turns is None:
            return found
        seen = {c.key for c in found}
        for turn in feat.content_turns:
            variant = dataclasses.replace(query, arrays={"vector": np.asarray(turn, np.float32)})
            for c in self.memory.candidates(variant, k=self.candidates):
                if c.key not in seen:
                    seen.add(c.key)
                    found.append(c)
        return found

    def _objects_step(self, pending: list[_Pending], *, keep_queries: bool) -> list[Verdict]:
        """The cascade's object step for a batch: the objects of every query and matched
        reference that lacks them (one detector and one GCN call; an image that is both a query
        and a reference is detected once), kept in their records; each pair rescored with them
        and its verdict made again (evidence: objects matched / added / removed / moved).
        ``keep_queries``: the queries were added to the memory by this batch, so their records
        get their objects too (a lookup that adds nothing writes only into the references')."""
        t0 = time.perf_counter()
        by_key: dict = {}
        for p in pending:
            by_key.setdefault(p.query_key, p.query)
            by_key.setdefault(p.best.candidate.key, p.best.reference)
        references = {p.best.candidate.key for p in pending}
        missing = {k: f for k, f in by_key.items() if f.objects is None}
        self.extractor.add_objects(list(missing.values()))
        for key, f in missing.items():
            if f.objects is not None and (keep_queries or key in references):
                self._keep_objects(key, f)
        ms = (time.perf_counter() - t0) * 1e3 / len(pending)
        out = []
        for p in pending:
            v, best = p.verdict, p.best
            for f, key in ((p.query, p.query_key), (best.reference, best.candidate.key)):
                _copy_objects(by_key[key], f)
            if p.query.objects is None or best.reference.objects is None:
                out.append(v)  # the detector failed on one of them: visual evidence only
                continue
            best.score = with_objects(best.score, p.query, best.reference)
            again = self._verdict(v.image_id, v.tenant, best.candidate.image_id,
                                  best.candidate.tenant, best.candidate.bank, best.score,
                                  query=p.query, reference=best.reference)
            again.timings_ms.update(v.timings_ms)
            again.timings_ms["objects"] = round(ms, 3)
            again.evidence.verifications = v.evidence.verifications
            again.evidence.cascade = [*v.evidence.cascade, "objects"]
            if again.verdict == "unique" and v.evidence.same_scene_id is not None:
                # the scene found before the object step (the nearest's, or another candidate's)
                again.evidence.same_scene = True
                again.evidence.same_scene_id = v.evidence.same_scene_id
            out.append(again)
        return out

    def _keep_objects(self, key, feat: ImageFeatures) -> None:
        """Write objects found late into the image's record (LRU and the stored form), as a new
        record object: the old one may be being written or published."""
        rec = self.memory.record(key)
        if rec is None or "objects.boxes" in rec.arrays:
            return
        arrays, meta = object_fields(feat)
        kept = {k: v for k, v in rec.meta.items() if k.split(".", 1)[0] not in OBJECT_FIELDS}
        self.memory.records.put(dataclasses.replace(
            rec, arrays={**rec.arrays, **arrays}, meta={**kept, **meta}), persist=True)

    def _verdict(
        self,
        image_id: str,
        tenant: str | None,
        match_id: str,
        match_tenant: str | None,
        bank: str | None,
        score: PairScore,
        notes: Sequence[str] = (),
        *,
        query: ImageFeatures | None = None,
        reference: ImageFeatures | None = None,
    ) -> Verdict:
        decision = self.policy.decision(score, tenant=tenant, query=query, reference=reference)
        kind, probability, review = decision.kind, decision.probability, decision.review
        evidence = score.evidence()
        evidence["notes"] = [*evidence.get("notes", []), *notes]
        if kind == "near_duplicate" and self.policy.scene_changed(score, tenant):
            evidence["notes"].append("policy: an object entered the scene, which breaks the "
                                     "duplicate for this tenant")
        evidence["same_scene"] = self.policy.same_scene(score, kind, query, reference)
        if evidence["same_scene"] and score.registration.verified:
            evidence["notes"].append(SAME_SCENE_NOTE)
        if self.policy.low_information(score, query, reference):
            evidence["low_information"] = True
            evidence["notes"].append(LOW_INFORMATION_NOTE)
        if bank is not None:
            evidence["bank"] = bank
        return Verdict(
            image_id=image_id,
            tenant=tenant,
            verdict=kind,
            match_id=match_id if kind != "unique" else None,
            match_tenant=match_tenant if kind != "unique" else None,
            score=round(score.fused, 6),
            probability=round(probability, 6),
            p_copy=round(decision.p_copy, 6),
            review=review,
            evidence=Evidence(**evidence, nearest_id=match_id),
            model_version=self.model_version,
            replica=self.memory.replica_id,
        )

    def late_matches(self, applied: Applied) -> list[Verdict]:
        """Corrected verdicts for own uploads judged before ``applied`` (a replicated image
        added earlier elsewhere) reached this replica, when they turn out to be its copies."""
        if not applied.missed:
            return []
        original = record_to_features(applied.record)
        out = []
        for key in applied.missed:
            rec = self.memory.record(key)
            if rec is None:
                continue
            query = record_to_features(rec)
            score = self.policy.score(query, original)
            v = self._verdict(
                rec.image_id, rec.tenant, applied.record.image_id, applied.record.tenant, None,
                score, query=query, reference=original,
                notes=["late match: the original reached this replica after this image "
                       "was judged (replication window)"],
            )
            if v.verdict != "unique":
                out.append(v)
        return out

    def compare(self, a: bytes, b: bytes) -> dict:
        """Score one pair of image blobs (no state involved)."""
        fa, fb = self.extractor.extract([a, b])
        for f in (fa, fb):
            if isinstance(f, DupstreamError):
                raise f
        score = self.policy.score(fb, fa)
        d = self.policy.decision(score, query=fb, reference=fa)
        return {
            "probability": round(d.p_copy, 6),
            "p_copy": round(d.p_copy, 6),
            "verdict": d.kind,
            "verdict_probability": round(d.probability, 6),
            "review": d.review,
            **score.evidence(),
            "low_information": self.policy.low_information(score, fb, fa),
            "same_scene": self.policy.same_scene(score, d.kind, fb, fa),
        }
