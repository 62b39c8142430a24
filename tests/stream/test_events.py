import json

import msgpack
import pytest

from dupstream.core.errors import EventError
from dupstream.core.events import ImageUploaded, decode_event, encode_event


def test_json_and_msgpack_decode_to_the_same_event():
    body = {"image_id": "img-1", "bucket": "uploads", "key": "a/b.jpg", "tenant": "acme",
            "ts": "2026-11-24T10:00:00Z"}
    a = decode_event(json.dumps(body).encode())
    b = decode_event(msgpack.packb(body))
    assert a == b
    assert a.tenant == "acme" and a.ts.year == 2026


def test_round_trip_both_formats():
    ev = ImageUploaded(image_id="x", bucket="bkt", key="k")
    for fmt in ("json", "msgpack"):
        assert decode_event(encode_event(ev, fmt=fmt)) == ev


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad_event_empty"),
        (None, "bad_event_empty"),
        (b"{not json", "bad_event_encoding"),
        (b"\xc1\xc1\xc1", "bad_event_encoding"),
        (b"[1, 2]", "bad_event_schema"),
        (json.dumps({"image_id": "x", "bucket": "bkt"}).encode(), "bad_event_schema"),
        (json.dumps({"image_id": "", "bucket": "bkt", "key": "k"}).encode(), "bad_event_schema"),
        (json.dumps({"image_id": "x", "bucket": "bkt", "key": "k", "ts": "noon"}).encode(),
         "bad_event_schema"),
        (msgpack.packb(42), "bad_event_schema"),
    ],
)
def test_bad_payloads_raise_event_error_with_reason(payload, reason):
    with pytest.raises(EventError) as info:
        decode_event(payload)
    assert info.value.reason == reason


def test_every_bad_event_in_the_catalogue_gets_its_reason(photos):
    from tests.badinputs import catalogue

    cases = [c for c in catalogue(photos["chelsea"]) if c.kind == "event"]
    assert len(cases) >= 15
    for case in cases:
        with pytest.raises(EventError) as info:
            decode_event(case.payload)
        assert info.value.reason == case.reason, case.name
