"""The soak benchmark's pure helpers (the soak itself runs in the bench, not here)."""

import hashlib
import os

import cv2
import numpy as np
import pytest

from dupstream.bench.soak import (
    growth_summary,
    key_census,
    metric_sum,
    parse_metrics,
    processed_at_exit,
    rates,
    rolling_floor,
    rounded,
    sample_process,
    splice_comment,
    state_bytes,
    warmup_seconds,
)


def _jpeg(seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def test_splice_comment_keeps_pixels_changes_bytes():
    src = _jpeg()
    a, b = splice_comment(src, "soak-0000001"), splice_comment(src, "soak-0000002")
    assert len({hashlib.sha256(x).hexdigest() for x in (src, a, b)}) == 3
    dec = [cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_COLOR) for x in (src, a, b)]
    assert np.array_equal(dec[0], dec[1]) and np.array_equal(dec[0], dec[2])
    assert b"soak-0000001" in a


def test_splice_comment_refuses_non_jpeg():
    with pytest.raises(ValueError):
        splice_comment(b"\x89PNG\r\n", "x")


def test_parse_metrics_and_sum_over_labels():
    text = (
        "# HELP dupstream_stream_events_total Events consumed\n"
        "# TYPE dupstream_stream_events_total counter\n"
        'dupstream_stream_events_total{outcome="verdict"} 120.0\n'
        'dupstream_stream_events_total{outcome="dlq"} 3.0\n'
        'dupstream_stream_events_created{outcome="dlq"} 1.7e9\n'
        "dupstream_state_index_size_vectors 117.0\n"
    )
    m = parse_metrics(text)
    assert metric_sum(m, "dupstream_stream_events_total") == 123.0
    assert metric_sum(m, "dupstream_state_index_size_vectors") == 117.0
    assert metric_sum(m, "dupstream_stream_missing") == 0.0


def test_warmup_is_ten_percent_but_at_least_two_minutes_and_at_most_half():
    assert warmup_seconds(1800) == 180
    assert warmup_seconds(300) == 120
    assert warmup_seconds(60) == 30


def test_growth_summary_flat_oscillating_series():
    # a floor of 1000 MB with a 300 MB batch spike every third sample: flat
    t = list(range(0, 600, 2))
    v = [1000.0 + (300.0 if i % 3 == 0 else 0.0) for i in range(len(t))]
    g = growth_summary(t, v, warmup_s=120)
    assert g["floor"]["growth_pct"] == 0.0 and g["peak"]["growth_pct"] == 0.0
    assert abs(g["floor_slope_per_min"]) < 1e-9
    assert g["min_after_warmup"] == 1000.0 and g["max_after_warmup"] == 1300.0
    assert g["max_during_warmup"] == 1300.0


def test_growth_summary_linear_growth():
    t = np.arange(0, 1800, 5.0)
    v = 1000.0 + 2.0 * t / 60.0  # +2 MB/min
    g = growth_summary(list(t), list(v), warmup_s=180, window_s=60)
    assert g["slope_per_min"] == pytest.approx(2.0)
    assert g["floor_slope_per_min"] == pytest.approx(2.0, rel=0.01)
    # floor: min of the first minute after warm-up (t=180) vs of the last minute (the last
    # sample is t=1795, so the window starts at t=1735)
    assert g["floor"]["start"] == pytest.approx(1006.0)
    assert g["floor"]["end"] == pytest.approx(1000.0 + 2.0 * 1735 / 60.0)
    assert g["floor"]["growth_pct"] == pytest.approx(100 * (2.0 * 1555 / 60.0) / 1006.0)


def test_growth_summary_needs_samples_after_warmup():
    with pytest.raises(ValueError):
        growth_summary([0, 1, 2], [1, 1, 1], warmup_s=10)
    with pytest.raises(ValueError):
        growth_summary([0, 1], [1], warmup_s=0)
    # no sample before the warm-up ends: no warm-up maximum
    assert np.isnan(growth_summary([5, 6, 7], [1, 2, 3], warmup_s=0)["max_during_warmup"])


def test_rates_and_rounded():
    assert rates([0, 2, 4], [0, 10, 10]) == [0.0, 5.0, 0.0]
    assert rounded({"a": [1.23456, float("nan")], "b": 3}) == {"a": [1.23, None], "b": 3}


def test_sample_process_reads_this_process():
    s = sample_process(os.getpid())
    assert s["rss"] > 10 * 2**20 and s["fds"] >= 3 and s["threads"] >= 1


def test_key_census_counts_records_distinct_duplicates_and_unknown_ids():
    keys = [b"soak-0000000", b"soak-0000001", b"soak-0000001", b"soak-0000009", None]
    assert key_census(keys, produced=5) == {"records": 5, "distinct": 3, "duplicates": 2,
                                            "unknown": 1}


def test_processed_at_exit_is_the_services_last_count():
    log = "x INFO started\nprocessed 12 events\nother\nprocessed 1440 events\n"
    assert processed_at_exit(log) == 1440
    assert processed_at_exit("no count here") is None


def test_rolling_floor_is_the_minimum_of_the_preceding_window():
    t = [0, 10, 20, 30, 70, 80]
    v = [5, 3, 4, 6, 7, 2]
    assert rolling_floor(t, v, window_s=30).tolist() == [5, 3, 3, 3, 7, 2]


def test_state_bytes_grow_with_the_index_and_the_records_up_to_the_lru_cap():
    # the final snapshot held 2 records of 100 B for 4 images (the LRU full at 200 B)
    exp = {"images": 4, "index_bytes": 40, "records_items": 2, "records_bytes": 200}
    assert state_bytes([0, 1, 2, 4], exp).tolist() == [0, 110, 220, 240]
    # every record held: no cap
    exp = {"images": 4, "index_bytes": 40, "records_items": 4, "records_bytes": 400}
    assert state_bytes([8], exp).tolist() == [880]
