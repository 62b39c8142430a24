"""The pipeline bench's stream mode runs the stream service's engine calls: the same verdicts
as ``process`` batch by batch."""

from dupstream.bench.pipeline import make_images, stream_ahead
from dupstream.engine import Upload
from dupstream.engine.build import build_deduper


def _rows(results):
    return [(v.image_id, v.verdict, v.match_id, round(v.probability, 9)) for v in results]


def test_stream_ahead_gives_the_verdicts_of_process():
    blobs = make_images(6)
    batches = [[Upload(f"i{i + j}", b) for j, b in enumerate(blobs[i:i + 3])]
               for i in range(0, 6, 3)]
    batches.append([Upload("again", blobs[0])])
    one, two = build_deduper(detector="none"), build_deduper(detector="none")
    assert [_rows(r) for r in stream_ahead(two, batches)] == [_rows(one.process(b))
                                                              for b in batches]
    assert list(stream_ahead(two, [])) == []
