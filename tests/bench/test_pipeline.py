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


def _run(mode, ips, rnd):
    return {"mode": mode, "batch": 8, "images_per_s": ips, "stages_ms": {}, "peak_rss_mb": 1.0,
            "round": rnd}


def test_report_gives_the_median_of_each_rounds_own_ratio():
    from dupstream.bench.pipeline import markdown

    results = [_run("cnn_only", 80.0, 1), _run("full_overlap", 40.0, 1),
               _run("cnn_only", 90.0, 2), _run("full_overlap", 36.0, 2),
               _run("cnn_only", 70.0, 3), _run("full_overlap", 35.0, 3)]
    md = markdown(results, None, "test machine")
    # rounds 2.00 / 2.50 / 2.00: the median of the rounds' own ratios, not of pooled rates
    assert "costs 2.00x (2.00x / 2.50x / 2.00x) the faster SSCD-only scan" in md
    assert "| full_overlap (round 2) | 8 | 36.0 |" in md
    one = markdown([r for r in results if r["round"] == 1], None, "test machine")
    assert "costs 2.00x the faster SSCD-only scan" in one and "round" not in one
