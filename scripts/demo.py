"""The main job on local servers: start a real Kafka-protocol broker and a real S3 server,
upload real photos and edited copies, produce their upload events, run `dupstream run`, print
the verdicts read back from the output topic, stop the servers.

    .venv/bin/python scripts/demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from confluent_kafka import Producer

from dupstream.core.events import ImageUploaded
from dupstream.lab.data import edits
from dupstream.lab.data.photos import load_photos
from dupstream.lab.devservers import local_servers, service_env
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic, submit
from dupstream.stream.kafka import ensure_topics


def main() -> int:
    with local_servers("demo") as (bootstrap, s3):
        return run_demo(bootstrap, s3)


def run_demo(bootstrap: str, s3: str) -> int:
    topics = {"uploads": "demo.uploads", "verdicts": "demo.verdicts", "dlq": "demo.dlq",
              "updates": "demo.index-updates"}
    ensure_topics(bootstrap_servers=bootstrap, topics={t: 3 for t in topics.values()},
                  compacted={topics["updates"]})
    store = MinioStore(endpoint=s3, access_key="demo", secret_key="demo-secret")
    producer = Producer({"bootstrap.servers": bootstrap})
    photos = load_photos(["astronaut", "chelsea", "coffee", "rocket", "china", "flower",
                          "grace_hopper", "motorcycle_left"])
    rng = np.random.default_rng(2026)
    originals = {f"{name}.jpg": edits.encode(rgb, "JPEG", 92) for name, rgb in photos.items()}
    copies = {
        "astronaut_reupload.jpg": ("astronaut.jpg", originals["astronaut.jpg"]),
        "chelsea_resized.jpg": ("chelsea.jpg",
                                edits.encode(edits.resize(photos["chelsea"], rng), "JPEG", 80)),
        "coffee_recoloured.jpg": ("coffee.jpg", edits.encode(edits.recolour(photos["coffee"], rng),
                                                             "JPEG", 90)),
        "rocket_crop.png": ("rocket.jpg", edits.encode(edits.crop(photos["rocket"], rng))),
        "china_caption.png": ("china.jpg", edits.encode(edits.caption(photos["china"], rng))),
        "flower_flipped.png": ("flower.jpg", edits.encode(edits.hflip(photos["flower"], rng))),
        "grace_hopper_screenshot.png": ("grace_hopper.jpg", edits.encode(
            edits.screenshot(photos["grace_hopper"], rng))),
        "motorcycle_object_pasted.png": ("motorcycle_left.jpg", edits.encode(
            edits.paste(photos["motorcycle_left"], rng, donor=photos["coffee"]))),
    }
    print(f"demo: uploading {len(originals)} originals to s3://demo-uploads and producing "
          f"their events to {topics['uploads']}")
    for key, data in originals.items():
        submit(producer=producer, store=store, topic=topics["uploads"], data=data,
               event=ImageUploaded(image_id=key, bucket="demo-uploads", key=key, tenant="demo"))
    producer.flush(10)
    n_events = len(originals) + len(copies)
    env = service_env(bootstrap=bootstrap, s3=s3, topics=topics, group="demo",
                      state_bucket="demo-state",
                      overrides={"DUPSTREAM_S3__ACCESS_KEY": "demo",
                                 "DUPSTREAM_S3__SECRET_KEY": "demo-secret"})
    print("demo: starting the consumer: dupstream run")
    proc = subprocess.Popen([sys.executable, "-m", "dupstream", "run", "--max-events",
                             str(n_events)], env=env)
    try:
        first = read_topic(bootstrap_servers=bootstrap, topic=topics["verdicts"],
                           expect=len(originals), timeout_s=120)
        print(f"demo: {len(first)} verdicts for the originals; now uploading {len(copies)} "
              "edited copies")
        for key, (_, data) in copies.items():
            submit(producer=producer, store=store, topic=topics["uploads"], data=data,
                   event=ImageUploaded(image_id=key, bucket="demo-uploads", key=key,
                                       tenant="demo"))
        producer.flush(10)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = read_topic(bootstrap_servers=bootstrap, topic=topics["verdicts"], expect=n_events,
                         timeout_s=30)
    verdicts = {}
    for r in records:
        v = json.loads(r.value)
        verdicts[v["image_id"]] = v
    print(f"\n{'image':30s} {'verdict':15s} {'match':18s} {'P':>6s} {'Sv':>6s}  evidence")
    ok = rc == 0
    for key in [*originals, *copies]:
        v = verdicts.get(key)
        if v is None:
            print(f"{key:30s} MISSING")
            ok = False
            continue
        ev = v["evidence"]
        if ev.get("exact_hash"):
            note = "exact bytes"
        elif ev.get("visual") is None:
            note = ""
        else:
            note = (f"pdq {ev.get('pdq_distance')} ({ev.get('pdq_transform')}), "
                    f"changed {ev.get('changed_area')}")
            if ev.get("semantic") is not None:
                note += f", Ss {ev['semantic']:.2f}"
            objs = [*ev.get("objects_matched", []),
                    *(f"{o} added" for o in ev.get("objects_added", [])),
                    *(f"{o} missing" for o in ev.get("objects_missing", []))]
            if objs and v["verdict"] != "unique":
                note += f", objects: {', '.join(objs)}"
        print(f"{key:30s} {v['verdict']:15s} {str(v['match_id']):18s} {v['probability']:6.3f} "
              f"{(ev.get('visual') or 0):6.3f}  {note}")
        want_copy = key in copies
        if want_copy and (v["verdict"] == "unique" or v["match_id"] != copies[key][0]):
            ok = False
        if not want_copy and v["verdict"] != "unique":
            ok = False
    print(f"\ndemo: {'OK' if ok else 'FAILED'}: {len(verdicts)} verdicts for {n_events} events "
          f"(model {next(iter(verdicts.values()))['model_version'] if verdicts else '-'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
