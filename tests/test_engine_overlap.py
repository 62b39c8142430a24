"""``Deduper.process_many``: the next batches decoded, hashed and embedded while one is judged -
the same verdicts as ``process`` batch by batch, errors in place, the exact-hash fast path
decided when the batch is judged, deployment faults raised, threads stopped on close."""

import threading

import numpy as np
import pytest

from dupstream.core.errors import ConfigError, DupstreamError, WeightsError
from dupstream.engine import Failed, Upload
from dupstream.engine.build import build_deduper
from dupstream.lab.data import edits
from dupstream.lab.data.edits import encode


@pytest.fixture(scope="module")
def uploads(photos):
    rng = np.random.default_rng(3)
    names = sorted(photos)[:6]
    out = [Upload(n, encode(photos[n], "JPEG", 90)) for n in names]
    out += [Upload(f"{n}-crop", encode(edits.crop(photos[n], rng), "JPEG", 85))
            for n in names[:3]]
    out.append(Upload("broken", b"\x89PNG not really"))
    out.append(Upload("again", out[1].data))  # byte-identical to an image of an earlier batch
    out.append(Upload(f"{names[4]}-flip", encode(np.ascontiguousarray(photos[names[4]][:, ::-1]),
                                                 "JPEG", 90)))
    out.append(Upload("twin-a", out[2].data + b""))  # the same bytes twice in one batch
    out.append(Upload("twin-b", out[2].data))
    return out


def _rows(results):
    rows = []
    for r in results:
        if isinstance(r, Failed):
            rows.append((r.image_id, "failed", r.error.reason))
        else:
            rows.append((r.image_id, r.verdict, r.match_id, round(r.probability, 9),
                         tuple(r.evidence.cascade), r.evidence.nearest_id))
    return rows


def _weights_missing(*a, **kw):
    raise WeightsError("weights missing (test)")


def _batches(uploads, size):
    return [uploads[i : i + size] for i in range(0, len(uploads), size)]


@pytest.mark.parametrize("ahead", [1, 3])
def test_the_same_verdicts_as_batch_by_batch(uploads, ahead):
    one = build_deduper(detector="yolov3_tiny_ort", threads=2)
    two = build_deduper(detector="yolov3_tiny_ort", threads=2)
    expected = [_rows(one.process(b)) for b in _batches(uploads, 4)]
    got = [_rows(r) for r in two.process_many(_batches(uploads, 4), ahead=ahead)]
    assert got == expected
    flat = {row[0]: row for rows in got for row in rows}
    assert flat["broken"][1] == "failed"
    assert flat["again"][1] == "duplicate" and flat["again"][4] == ("exact",)
    assert len(one) == len(two)


def test_empty_batches_give_empty_results():
    d = build_deduper(detector="none", threads=2)
    assert d.process([]) == []
    assert list(d.process_many([[], []])) == [[], []]


def test_a_blob_the_memory_has_is_not_embedded_ahead(uploads):
    d = build_deduper(detector="none", threads=2)
    d.process(uploads[:2])
    embedded = []
    real = d.extractor.complete

    def complete(prepared, **kw):
        embedded.extend(prepared.blobs)
        return real(prepared, **kw)

    d.extractor.complete = complete
    [[v]] = list(d.process_many([[Upload("re-upload", uploads[0].data)]]))
    assert v.verdict == "duplicate" and v.match_id == uploads[0].image_id
    assert v.evidence.cascade == ["exact"] and embedded == []


def test_a_skipped_blob_the_fast_path_misses_is_extracted_then(uploads):
    """Known by its bytes when read ahead, not answered by the fast path when judged (the
    earlier copy was judged with add=False): it is extracted then, and judged like any other."""
    d = build_deduper(detector="none", threads=2)
    batches = [[uploads[0]], [Upload("same-bytes", uploads[0].data)]]
    got = [_rows(r) for r in d.process_many(batches, add=False)]
    ref = build_deduper(detector="none", threads=2)
    assert got == [_rows(ref.process(b, add=False)) for b in batches]


def test_a_deployment_fault_is_raised_and_the_threads_stop(uploads):
    d = build_deduper(detector="none", threads=2)
    d.extractor.complete = _weights_missing
    with pytest.raises(WeightsError):
        list(d.process_many(_batches(uploads, 4)))
    assert not [t for t in threading.enumerate() if t.name.startswith("dupstream-embed")]


def test_closing_early_stops_the_threads(uploads):
    d = build_deduper(detector="none", threads=2)
    it = d.process_many(_batches(uploads, 2))
    first = next(it)
    assert len(first) == 2
    it.close()
    assert not [t for t in threading.enumerate()
                if t.name.startswith(("dupstream-embed", "dupstream-prepare"))]
    with pytest.raises(ConfigError):
        next(d.process_many([uploads[:1]], ahead=0))


def test_features_extracted_ahead_give_the_same_verdicts(uploads):
    """What the stream does: a batch extracted (``extract_ahead``) while the one before it is
    judged, then judged with those features - the same verdicts as ``process`` alone, and no
    image extracted a second time."""
    one = build_deduper(detector="yolov3_tiny_ort", threads=2)
    two = build_deduper(detector="yolov3_tiny_ort", threads=2)
    expected = [_rows(one.process(b)) for b in _batches(uploads, 4)]
    calls = []
    real = two.extractor.extract

    def extract(blobs, **kw):
        calls.append(len(blobs))
        return real(blobs, **kw)

    two.extractor.extract = extract
    got, batches = [], _batches(uploads, 4)
    ahead = two.extract_ahead(batches[0])
    for k, batch in enumerate(batches):
        nxt = two.extract_ahead(batches[k + 1]) if k + 1 < len(batches) else None
        got.append(_rows(two.process(batch, extracted=ahead)))
        ahead = nxt
    assert got == expected
    # the process calls extracted nothing: every blob was extracted ahead, or skipped there
    # as known bytes and answered by the fast path
    assert calls == []


def test_extracted_ahead_skips_known_bytes_and_process_fills_the_gaps(uploads):
    d = build_deduper(detector="none", threads=2)
    d.process(uploads[:1])
    batch = [Upload("re-upload", uploads[0].data), uploads[1], uploads[9]]  # 9: broken bytes
    ahead = d.extract_ahead(batch)
    assert [e.digest for e in ahead] == [d.extract_ahead([u])[0].digest for u in batch]
    assert ahead[0].features is None  # the memory has these bytes: the fast path answers
    assert ahead[1].features is not None and ahead[1].ms > 0
    assert ahead[2].features is not None and isinstance(ahead[2].features, DupstreamError)
    # given for some uploads only (None: nothing ahead): the rest is extracted by process
    got = _rows(d.process(batch, extracted=[ahead[0], None, ahead[2]], add=False))
    ref = build_deduper(detector="none", threads=2)
    ref.process(uploads[:1])
    assert got == _rows(ref.process(batch, add=False))
    with pytest.raises(ValueError):
        d.process(batch, extracted=ahead[:2])


def test_extract_ahead_raises_a_deployment_fault(uploads):
    d = build_deduper(detector="none", threads=2)
    d.extractor.complete = _weights_missing
    with pytest.raises(WeightsError):
        d.extract_ahead(uploads[:2])
