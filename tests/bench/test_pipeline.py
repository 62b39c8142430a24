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


def test_report_states_the_verdict_rate_only_when_measured():
    from dupstream.bench.pipeline import markdown

    e2e = {"events": 4, "rate_per_s": 2.0, "mode": "yolov3_tiny_ort", "throughput_per_s": 1.5,
           "verdict_rate_per_s": 3.25, "latency_ms": {"p50": 10.0, "p99": 20.0}}
    results = [_run("cnn_only", 80.0, 1), _run("full_overlap", 40.0, 1)]
    assert "verdicts 3.25/s (first to last verdict)" in markdown(results, e2e, "m")
    one = markdown(results, {**e2e, "verdict_rate_per_s": None}, "m")
    assert "None/s" not in one and "verdict rate not measured (fewer than two verdicts)" in one
