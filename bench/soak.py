"""Soak benchmark: a backfill at full speed through the real broker and S3 server for N minutes,
sampling the service process's RSS and open file descriptors.

    python -m dupstream.bench.soak [--minutes 30] [--interval 5] [--out results/soak-30min]

``local_servers()`` starts a Tansu broker and a moto S3 server; ``dupstream run`` (default
settings: full semantic pipeline) runs as a subprocess. A producer thread keeps a backlog of
upload events ahead of the service (``--backlog``, counted against the service's own
``dupstream_stream_events_total``), so the service never idles. Each event has its own id and its
own object key; the bytes come from a pool of distinct JPEGs made from the packaged photos
(crops + edits) with the event id spliced in as a JPEG comment, so every object has its own
SHA-256 (no hash fast path: every event runs the models) and producing stays cheap.

Every ``--interval`` seconds: the service's RSS, open file descriptors and threads (psutil, else
/proc), its /metrics (events, index size) and the load average. After the run the verdict and
dead-letter topics are read back (records, distinct ids, duplicates; against the count the
service prints at exit), and the newest snapshot in the state bucket gives the index + records
bytes per image: the state every remembered image adds (``state_bytes``), to tell from a leak.
RSS is judged raw and minus that state, each on its floor, median and peak after warm-up.

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``; prints the summary. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

#: the four topics and the buckets of the soak
TOPICS = {"uploads": "soak.uploads", "verdicts": "soak.verdicts", "dlq": "soak.dlq",
          "updates": "soak.index-updates"}
BUCKET, STATE_BUCKET = "soak", "soak-state"


# -- pure helpers (tested in tests/evaluation/test_soak_bench.py) ------------------------------

def splice_comment(jpeg: bytes, text: str) -> bytes:
    """``jpeg`` with a COM segment holding ``text`` right after SOI: the same pixels, other
    bytes (another SHA-256)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    payload = text.encode()
    if len(payload) > 65533:
        raise ValueError("comment too long for one COM segment")
    seg = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + seg + jpeg[2:]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """Sum of every series of ``name`` (all label sets)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def warmup_seconds(duration_s: float) -> float:
    """End of the warm-up: 10 % of the run but at least 2 minutes, at most half of it."""
    return min(max(0.1 * duration_s, 120.0), 0.5 * duration_s)


def growth_summary(t_s: list[float], values: list[float], *, warmup_s: float,
                   window_s: float = 60.0) -> dict:
    """Flatness of a sampled series after warm-up.

    Two windows of ``window_s``: the first after ``warmup_s`` and the last of the run. For each
    of three statistics over a window -- ``floor`` (min: what stays resident between batches),
    ``median`` and ``peak`` (max: the floor plus one batch's transient working set) -- the
    ``start`` and ``end`` value and ``growth_pct`` = (end - start) / start. ``slope_per_min``:
    the least-squares slope over every sample after warm-up (per minute);
    ``floor_slope_per_min``: the same over the floors of consecutive complete ``window_s``
    bins (NaN with fewer than two); ``min``/``max`` after warm-up and over the whole run;
    ``max_during_warmup`` (NaN without samples before ``warmup_s``)."""
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(values, dtype=float)
    if t.size != v.size:
        raise ValueError("times and values differ in length")
    post = t >= warmup_s
    if post.sum() < 2:
        raise ValueError("fewer than two samples after warm-up")
    tp, vp = t[post], v[post]
    first, last = vp[tp <= tp[0] + window_s], vp[tp >= tp[-1] - window_s]
    out: dict = {}
    for name, fn in (("floor", np.min), ("median", np.median), ("peak", np.max)):
        start, end = float(fn(first)), float(fn(last))
        out[name] = {"start": start, "end": end,
                     "growth_pct": 100.0 * (end - start) / start if start else float("nan")}
    out["slope_per_min"] = float(np.polyfit(tp / 60.0, vp, 1)[0])
    # the floor's trend: the minimum of each window_s bin after warm-up, fitted over the bins
    # (complete bins only: a short last bin would be one or two samples, not a floor)
    bins = ((tp - tp[0]) // window_s).astype(int)
    full = int((tp[-1] - tp[0]) // window_s)
    floors = [(float(tp[bins == b].mean()), float(vp[bins == b].min()))
              for b in np.unique(bins) if b < full]
    out["floor_slope_per_min"] = (float(np.polyfit([x / 60.0 for x, _ in floors],
                                                   [y for _, y in floors], 1)[0])
                                  if len(floors) >= 2 else float("nan"))
    out.update({"min_after_warmup": float(vp.min()), "max_after_warmup": float(vp.max()),
                "min": float(v.min()), "max": float(v.max()),
                "max_during_warmup": float(v[~post].max()) if (~post).any() else float("nan")})
    return out


def rolling_floor(t_s, values, window_s: float = 60.0) -> np.ndarray:
    """At each sample, the minimum over the samples of the preceding ``window_s`` (itself
    included): the floor the saw-tooth of the batches returns to."""
    t, v = np.asarray(t_s, dtype=float), np.asarray(values, dtype=float)
    lo = np.searchsorted(t, t - window_s, side="left")
    return np.array([v[a:i + 1].min() for i, a in enumerate(lo)])


def rounded(obj, nd: int = 2):
    """``obj`` with every float rounded to ``nd`` decimals and NaN as None (strict JSON),
    through nested dicts and lists."""
    if isinstance(obj, float):
        return None if np.isnan(obj) else round(obj, nd)
    if isinstance(obj, dict):
        return {k: rounded(v, nd) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, nd) for v in obj]
    return obj


def rates(t_s: list[float], counts: list[float]) -> list[float]:
    """Per-interval rate of a counter (the first sample gets 0)."""
    out = [0.0]
    for i in range(1, len(t_s)):
        dt = t_s[i] - t_s[i - 1]
        out.append((counts[i] - counts[i - 1]) / dt if dt > 0 else 0.0)
    return out


# -- process sampling --------------------------------------------------------------------------

def sample_process(pid: int) -> dict:
    """RSS (bytes), open fds and threads of ``pid``: psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        p = psutil.Process(pid)
        with p.oneshot():
            return {"rss": p.memory_info().rss, "fds": p.num_fds(), "threads": p.num_threads()}
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"])}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


# -- the run -------------------------------------------------------------------------------------

class Backfill(threading.Thread):
    """Keeps ``backlog`` events ahead of the service's processed count (``processed`` is set by
    the sampler from /metrics): every event its own id and key, the bytes from ``pool``."""

    def __init__(self, *, bootstrap: str, s3: str, pool: list[bytes], backlog: int) -> None:
        super().__init__(daemon=True, name="soak-producer")
        from confluent_kafka import Producer

        from dupstream.stream.blobs import MinioStore

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.store = MinioStore(endpoint=s3, access_key="soak", secret_key="soak")
        self.pool, self.backlog = pool, backlog
        self.produced = 0
        self.processed = 0
        self.stop = threading.Event()
        self.error: str | None = None

    def produce(self, n: int) -> None:
        from dupstream.core.events import ImageUploaded
        from dupstream.stream.client import submit

        for _ in range(n):
            i = self.produced
            ev = ImageUploaded(image_id=f"soak-{i:07d}", bucket=BUCKET, key=f"u/{i:07d}.jpg")
            submit(producer=self.producer, store=self.store, topic=TOPICS["uploads"], event=ev,
                   data=splice_comment(self.pool[i % len(self.pool)], ev.image_id))
            self.producer.poll(0)
            self.produced += 1
        self.producer.flush(30)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                missing = self.backlog - (self.produced - self.processed)
                if missing > 0:
                    self.produce(min(missing, 100))
                else:
                    self.stop.wait(0.5)
        except Exception as exc:  # reported in the results, the soak goes on without producing
            self.error = repr(exc)


def expected_bytes_per_image(s3: str) -> dict | None:
    """Index + records bytes per image of the newest snapshot in the state bucket (the growth
    the memory is expected to add per new image); None when there is no snapshot."""
    from dupstream.state.blobstore import MinioBlobStore
    from dupstream.state.snapshot import load_latest_snapshot
    from dupstream.stream.blobs import MinioStore

    store = MinioStore(endpoint=s3, access_key="soak", secret_key="soak")
    restored = load_latest_snapshot(MinioBlobStore(store.client, STATE_BUCKET, create=False),
                                    prefix="dupstream")
    if restored is None:
        return None
    st = restored.memory.stats()
    index_bytes = sum(st["bytes"].values())
    records_bytes = st["records"]["bytes"]
    n = st["images"]
    return {"snapshot": restored.snapshot_id, "images": n, "index_bytes": index_bytes,
            "index_bytes_by_part": st["bytes"], "records_items": st["records"]["items"],
            "records_bytes": records_bytes,
            "bytes_per_image": (index_bytes + records_bytes) / n if n else None}


def key_census(keys: list[bytes | None], produced: int) -> dict:
    """Records, distinct keys and duplicates among ``keys`` (a topic read back), and the keys
    that are no ``soak-<i>`` id below ``produced`` (events the soak never made)."""
    distinct = {k for k in keys if k is not None}
    want = {f"soak-{i:07d}".encode() for i in range(produced)}
    return {"records": len(keys), "distinct": len(distinct),
            "duplicates": len(keys) - len(distinct), "unknown": len(distinct - want)}


def topic_keys(bootstrap: str, topic: str, *, idle_s: float = 5.0,
               timeout_s: float = 300.0) -> list[bytes | None]:
    """The key of every record in ``topic``: all partitions assigned from the beginning (no
    group join), read until nothing has arrived for ``idle_s`` (an empty topic: ``idle_s``)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-census-{time.time_ns()}",
                  "enable.auto.commit": False})
    keys: list[bytes | None] = []
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            msgs = [m for m in c.consume(num_messages=1000, timeout=0.5) if m.error() is None]
            if msgs:
                keys.extend(m.key() for m in msgs)
                last = time.monotonic()
    finally:
        c.close()
    return keys


def topic_census(bootstrap: str, topic: str, produced: int) -> dict:
    """``key_census`` of ``topic`` read back from the beginning. (Counted by reading, not from
    the high watermarks: Tansu 0.6 reports a partition's high watermark as its last record
    batch's base offset + 1, so a batch of n records is counted once, not n times.)"""
    return key_census(topic_keys(bootstrap, topic), produced)


def processed_at_exit(log_text: str) -> int | None:
    """The service's own count, printed as it exits (``processed N events``)."""
    for line in reversed(log_text.splitlines()):
        if line.startswith("processed ") and line.endswith(" events"):
            return int(line.split()[1])
    return None


def run_soak(*, minutes: float, interval_s: float, backlog: int, pool_size: int,
             snapshot_interval_s: float, log_path: Path, servers: str = "soak") -> dict:
    from dupstream.bench.pipeline import make_images
    from dupstream.lab.devservers import free_port, local_servers, service_env
    from dupstream.stream.kafka import ensure_topics

    duration = minutes * 60.0
    t_pool = time.perf_counter()
    pool = make_images(pool_size, seed=7)
    pool_s = time.perf_counter() - t_pool
    samples: list[dict] = []
    with local_servers(servers) as (bootstrap, s3):
        ensure_topics(bootstrap_servers=bootstrap, topics={t: 3 for t in TOPICS.values()},
                      compacted={TOPICS["updates"]})
        backfill = Backfill(bootstrap=bootstrap, s3=s3, pool=pool, backlog=backlog)
        t_pre = time.perf_counter()
        backfill.produce(backlog)  # the backlog is there before the service starts
        preload_s = time.perf_counter() - t_pre
        port = free_port()
        env = service_env(bootstrap=bootstrap, s3=s3, topics=TOPICS, group="soak",
                          state_bucket=STATE_BUCKET,
                          overrides={"DUPSTREAM_METRICS_PORT": str(port),
                                     "DUPSTREAM_STATE__SNAPSHOT_INTERVAL_S":
                                         str(snapshot_interval_s)})
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            backfill.start()
            exited_early = None
            while True:
                now = time.monotonic() - t0
                if proc.poll() is not None:
                    exited_early = proc.returncode
                    break
                try:
                    s = {"t_s": round(now, 2), **sample_process(proc.pid)}
                except (OSError, ProcessLookupError):
                    continue
                try:
                    m = scrape(port)
                    s["events"] = metric_sum(m, "dupstream_stream_events_total")
                    s["dlq"] = metric_sum(m, "dupstream_stream_dlq_records_total")
                    s["index_size"] = metric_sum(m, "dupstream_state_index_size_vectors")
                    backfill.processed = int(s["events"])
                except OSError:  # the health server is not up yet
                    s["events"] = s["dlq"] = s["index_size"] = None
                s["load1"] = os.getloadavg()[0]
                s["produced"] = backfill.produced
                samples.append(s)
                if now >= duration:
                    break
                time.sleep(max(0.0, interval_s - (time.monotonic() - t0 - now)))
            backfill.stop.set()
            t_stop = time.monotonic()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            stop_s = time.monotonic() - t_stop
        backfill.join(timeout=60)
        verdicts = topic_census(bootstrap, TOPICS["verdicts"], backfill.produced)
        dead = topic_census(bootstrap, TOPICS["dlq"], backfill.produced)
        expected = expected_bytes_per_image(s3)
    log_text = log_path.read_text(errors="replace")
    tail = log_text.splitlines()[-20:]
    return {"minutes": minutes, "interval_s": interval_s, "backlog": backlog,
            "pool_size": pool_size, "pool_build_s": round(pool_s, 1),
            "preload_s": round(preload_s, 1), "snapshot_interval_s": snapshot_interval_s,
            "exit_code": proc.returncode, "exited_early": exited_early,
            "stop_s": round(stop_s, 1), "produced": backfill.produced,
            "producer_error": backfill.error, "verdict_records": verdicts["records"],
            "dlq_records": dead["records"], "verdicts": verdicts, "dead_letters": dead,
            "processed_at_exit": processed_at_exit(log_text),
            "expected": expected, "samples": samples,
            "service_log_tail": tail}


def state_bytes(images, exp: dict) -> np.ndarray:
    """The state (index + records) of ``images`` remembered images, from the final snapshot
    ``exp``: the index grows by its bytes per image; the records by their bytes per record held
    until the records LRU is full (fewer records than images in the snapshot: its byte total is
    then the cap in effect, and the records stop growing there)."""
    n = np.asarray(images, dtype=float)
    index = n * exp["index_bytes"] / exp["images"]
    items = exp.get("records_items") or 0
    if not items:
        return index
    per_record = exp["records_bytes"] / items
    cap = exp["records_bytes"] if items < exp["images"] else np.inf
    return index + np.minimum(n * per_record, cap)


def summarise(res: dict) -> dict:
    """The soak's verdict: RSS and FDs after warm-up, throughput, expected vs measured growth.

    RSS is judged on its floor (the minimum over a minute: what stays resident between
    batches); the median and the peak (the floor plus one batch's activations) are reported
    beside it."""
    s = [x for x in res["samples"] if x.get("events") is not None]
    t = [x["t_s"] for x in s]
    wu = warmup_seconds(res["minutes"] * 60.0)
    rss = growth_summary(t, [x["rss"] / 2**20 for x in s], warmup_s=wu)
    fds = growth_summary(t, [x["fds"] for x in s], warmup_s=wu)
    threads = growth_summary(t, [x["threads"] for x in s], warmup_s=wu)
    post = [x for x in s if x["t_s"] >= wu]
    ev0, ev1 = post[0]["events"], post[-1]["events"]
    idx0, idx1 = post[0]["index_size"], post[-1]["index_size"]
    span_min = (post[-1]["t_s"] - post[0]["t_s"]) / 60.0
    loads = [x["load1"] for x in res["samples"]]
    out = {
        "warmup_s": wu,
        "rss_mb": rss,
        "fds": fds,
        "threads": threads,
        "events_processed": int(s[-1]["events"]),
        "events_after_warmup": int(ev1 - ev0),
        "throughput_after_warmup_per_s": (ev1 - ev0) / (span_min * 60.0),
        "index_size_start_end": [int(idx0), int(idx1)],
        "load1": {"min": min(loads), "mean": float(np.mean(loads)), "max": max(loads)},
        "rss_within_10pct": abs(rss["floor"]["growth_pct"]) <= 10.0,
        # no growth: the resident count (the floor and the median of the first and the last
        # minute, the trend of the minute floors) does not rise; short spikes (connections
        # opened and closed within a batch) are reported, not judged
        "fds_flat": fds["floor"]["end"] <= fds["floor"]["start"]
                    and fds["median"]["end"] <= fds["median"]["start"]
                    and (fds["floor_slope_per_min"] or 0.0) <= 1e-6,
    }
    exp = res.get("expected")
    if exp and exp.get("bytes_per_image"):
        # the state (index + records of every image remembered) is growth by design: RSS minus
        # it (index size x the final snapshot's bytes per image) is what has to stay flat
        state = state_bytes([x["index_size"] for x in s], exp) / 2**20
        net = [x["rss"] / 2**20 - st for x, st in zip(s, state, strict=True)]
        out["rss_minus_state_mb"] = growth_summary(t, net, warmup_s=wu)
        out["rss_minus_state_within_10pct"] = abs(
            out["rss_minus_state_mb"]["floor"]["growth_pct"]) <= 10.0
        expected_mb = float(state_bytes(idx1, exp) - state_bytes(idx0, exp)) / 2**20
        measured_mb = rss["floor"]["end"] - rss["floor"]["start"]
        out["expected_growth_mb"] = expected_mb
        out["expected_growth_pct"] = 100.0 * expected_mb / rss["floor"]["start"]
        out["measured_floor_growth_mb"] = measured_mb
        out["unexplained_growth_mb"] = measured_mb - expected_mb
        out["unexplained_growth_pct"] = 100.0 * (measured_mb - expected_mb) / rss["floor"]["start"]
    return rounded(out, 3)


def write_markdown(res: dict, summary: dict, path: Path) -> None:
    r, f, th = summary["rss_mb"], summary["fds"], summary["threads"]
    exp = res.get("expected") or {}
    ld = summary["load1"]

    def trio(key: str) -> str:
        x = r[key]
        return f"{x['start']:.1f} → {x['end']:.1f} MB ({x['growth_pct']:+.2f} %)"

    lines = [
        f"# Soak, {res['minutes']:g} minutes ({res['started_utc']})",
        "",
        f"`{res['command']}` on {res['machine']}; load average (1 min) during the run "
        f"min/mean/max {ld['min']:.2f}/{ld['mean']:.2f}/{ld['max']:.2f}. Service: `dupstream "
        f"run` with default settings (full semantic pipeline), snapshots every "
        f"{res['snapshot_interval_s']:g} s"
        + "".join(f", `{k}={v}`" for k, v in (res.get("env") or {}).items())
        + f"; samples every {res['interval_s']:g} s; start/end "
        "= the first minute after warm-up / the last minute.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| warm-up (excluded) | first {summary['warmup_s']:.0f} s |",
        f"| RSS floor (min over a minute) after warm-up → end | {trio('floor')} |",
        f"| RSS median after warm-up → end | {trio('median')} |",
        f"| RSS peak (max over a minute) after warm-up → end | {trio('peak')} |",
        f"| RSS linear-fit slope after warm-up (all samples / minute floors) | "
        f"{r['slope_per_min']:+.2f} / "
        f"{'n/a' if r['floor_slope_per_min'] is None else format(r['floor_slope_per_min'], '+.2f')}"
        " MB/min |",
        f"| RSS min–max after warm-up (whole run) | {r['min_after_warmup']:.1f}–"
        f"{r['max_after_warmup']:.1f} MB ({r['min']:.1f}–{r['max']:.1f}) |",
        f"| open FDs after warm-up → end (median) | {f['median']['start']:.0f} → "
        f"{f['median']['end']:.0f} (range {f['min_after_warmup']:.0f}–"
        f"{f['max_after_warmup']:.0f}; whole run {f['min']:.0f}–{f['max']:.0f}; minute floors "
        f"{f['floor_slope_per_min'] or 0.0:+.3f}/min) |",
        f"| threads after warm-up (range) | {th['min_after_warmup']:.0f}–"
        f"{th['max_after_warmup']:.0f} |",
        f"| events processed (service metric) | {summary['events_processed']} "
        f"({summary['events_after_warmup']} after warm-up) |",
        f"| throughput after warm-up | {summary['throughput_after_warmup_per_s']:.2f} "
        "events/s |",
        f"| verdict / dead-letter records in the topics | {res['verdict_records']} / "
        f"{res['dlq_records']} |",
        *([f"| events processed at exit (service log) / distinct ids in the verdict + "
           f"dead-letter topics / duplicate records | {res['processed_at_exit']} / "
           f"{res['verdicts']['distinct'] + res['dead_letters']['distinct']} / "
           f"{res['verdicts']['duplicates'] + res['dead_letters']['duplicates']} |"]
          if "verdicts" in res else []),
        f"| events produced | {res['produced']} (backlog kept at {res['backlog']}) |",
        f"| index size after warm-up → end | {summary['index_size_start_end'][0]} → "
        f"{summary['index_size_start_end'][1]} |",
    ]
    if "expected_growth_mb" in summary:
        lines += [
            f"| state per image (final snapshot, {exp['images']} images, "
            f"{exp.get('records_items', 0)} records held) | index "
            f"{exp['index_bytes'] / exp['images']:.0f} B + records "
            f"{exp['records_bytes'] / max(1, exp.get('records_items') or 0):.0f} B per record"
            + (f" up to the records LRU's {exp['records_bytes'] / 2**20:.0f} MB"
               if (exp.get("records_items") or 0) < exp["images"] else "") + " |",
            f"| expected growth (the state of the new images) | "
            f"{summary['expected_growth_mb']:.1f} MB ({summary['expected_growth_pct']:+.2f} %)"
            " |",
            f"| measured floor growth − expected | {summary['unexplained_growth_mb']:+.1f} MB "
            f"({summary['unexplained_growth_pct']:+.2f} %) |",
        ]
    if "rss_minus_state_mb" in summary:
        n = summary["rss_minus_state_mb"]
        slope = n["floor_slope_per_min"]
        lines += [
            f"| RSS − state (of the index size at each sample) floor after warm-up → end | "
            f"{n['floor']['start']:.1f} → {n['floor']['end']:.1f} MB "
            f"({n['floor']['growth_pct']:+.2f} %); minute-floor slope "
            f"{'n/a' if slope is None else format(slope, '+.2f')} MB/min |",
            f"| RSS − state floor within 10 % after warm-up | "
            f"{'yes' if summary['rss_minus_state_within_10pct'] else 'NO'} |",
        ]
    lines += [
        f"| RSS floor (raw) within 10 % after warm-up | "
        f"{'yes' if summary['rss_within_10pct'] else 'NO'} |",
        f"| FDs flat (floor and median end ≤ start, minute floors not rising) | "
        f"{'yes' if summary['fds_flat'] else 'NO'} |",
        f"| service exit code after SIGTERM | {res['exit_code']} (stopped in {res['stop_s']} s)"
        f"{'' if res['exited_early'] is None else ', EXITED EARLY'} |",
        "",
        f"![soak]({path.name.removesuffix('.md')}.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def plot(res: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [x for x in res["samples"] if x.get("events") is not None]
    t = np.array([x["t_s"] for x in s]) / 60.0
    rss = np.array([x["rss"] for x in s]) / 2**20
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    wu = summary["warmup_s"] / 60.0
    ax[0].plot(t, rss, lw=0.5, alpha=0.35, color="tab:blue", label="RSS (every sample)")
    ax[0].plot(t, rolling_floor(t * 60.0, rss), lw=1.6, color="tab:blue",
               label="RSS floor (min of the last 60 s)")
    r = summary["rss_mb"]
    ax[0].axhline(r["floor"]["start"] * 1.1, color="tab:blue", lw=0.8, ls=":",
                  label="+10 % of the warm floor")
    exp = res.get("expected") or {}
    if exp.get("bytes_per_image"):
        net = rss - state_bytes([x["index_size"] for x in s], exp) / 2**20
        ax[0].plot(t, rolling_floor(t * 60.0, net), lw=1.6, color="tab:green",
                   label="floor of RSS − state (index + records of the images held)")
        n = summary["rss_minus_state_mb"]["floor"]["start"]
        ax[0].axhline(n * 1.1, color="tab:green", lw=0.8, ls=":",
                      label="+10 % of its warm floor")
    ax[0].set_ylabel("RSS (MB)")
    ax[0].legend(fontsize=7, loc="upper left")
    ax[1].plot(t, [x["fds"] for x in s], lw=1, label="open FDs")
    ax[1].plot(t, [x["threads"] for x in s], lw=1, label="threads")
    ax[1].set_ylabel("count")
    ax[1].legend(fontsize=8, loc="lower right")
    tput = rates([x["t_s"] for x in s], [x["events"] for x in s])
    ax[2].plot(t, tput, lw=0.7, alpha=0.5, label="events/s (per sample)")
    if len(tput) >= 6:
        ax[2].plot(t, np.convolve(tput, np.ones(6) / 6, mode="same"), lw=1.2,
                   label="6-sample mean")
    ax[2].set_ylabel("events/s")
    ax[2].set_xlabel("minutes since the service started")
    ax[2].legend(fontsize=8, loc="lower right")
    tw = ax[2].twinx()
    tw.plot(t, [x["index_size"] for x in s], color="grey", lw=0.8)
    tw.set_ylabel("index size", color="grey")
    for a in ax:
        a.axvline(wu, color="k", lw=0.6, ls=":")
    fig.suptitle(f"dupstream soak, {res['minutes']:g} min "
                 f"(warm-up {summary['warmup_s']:.0f} s dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _malloc_trim() -> bool:
    """glibc's malloc_trim(0): hand free heap pages back to the OS (False: not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0) or True)
    except (OSError, AttributeError):
        return False


def trace_growth(*, images: int, batch: int = 16, pool_size: int = 256, top: int = 15,
                 traced: bool = True, snapshot_every: int = 0) -> dict:
    """What grows, in this process: the engine (default models, an in-memory index) judges and
    remembers ``images`` distinct uploads made like the soak's, under tracemalloc; the traced
    heap and the RSS after the first two batches (warm) and at the end, the top differences by
    source line and by file, and the memory's own byte counts. Python-heap and numpy
    allocations are traced; FAISS's and the runtimes' C++ allocations are not (the RSS
    difference holds those). At each mark the RSS is read again after glibc's ``malloc_trim``:
    what the process keeps once free heap pages are handed back. ``traced=False``: no
    tracemalloc (its overhead), the RSS and the trimmed RSS only. ``snapshot_every``: write a
    snapshot of the memory (to files in a temporary folder, the newest kept) after every that
    many batches, as the service's snapshot thread does."""
    import gc
    import tempfile
    import tracemalloc

    from dupstream.bench.pipeline import make_images
    from dupstream.engine import Upload
    from dupstream.engine.build import build_deduper
    from dupstream.state.blobstore import FileBlobStore
    from dupstream.state.snapshot import write_snapshot

    pool = make_images(pool_size, seed=7)
    deduper = build_deduper()
    uploads = [Upload(f"t-{i:06d}", splice_comment(pool[i % len(pool)], f"t-{i:06d}"))
               for i in range(images)]
    deduper.process([Upload("warm", make_images(1, seed=99)[0])], add=False)
    if traced:
        tracemalloc.start(8)
    marks: dict[str, dict] = {}
    snaps = {}
    tmp = tempfile.TemporaryDirectory(prefix="soak-trace-")
    snap_store = FileBlobStore(tmp.name)
    for n, i in enumerate(range(0, images, batch)):
        deduper.process(uploads[i:i + batch])
        if snapshot_every and (n + 1) % snapshot_every == 0:
            write_snapshot(deduper.memory, snap_store, prefix="trace", keep=1)
        if n == 1 or i + batch >= images:
            gc.collect()
            name = "warm" if n == 1 else "end"
            if traced:
                snaps[name] = tracemalloc.take_snapshot()
            st = deduper.memory.stats()
            marks[name] = {"images": st["images"],
                           "traced_bytes": tracemalloc.get_traced_memory()[0] if traced else 0,
                           "rss": sample_process(os.getpid())["rss"],
                           "index_bytes": sum(st["bytes"].values()),
                           "records_bytes": st["records"]["bytes"]}
            trimmed = _malloc_trim()
            marks[name]["rss_after_trim"] = (sample_process(os.getpid())["rss"] if trimmed
                                             else None)
    added = marks["end"]["images"] - marks["warm"]["images"]
    keys = ["traced_bytes", "rss", "rss_after_trim", "index_bytes", "records_bytes"]
    per = {k: (marks["end"][k] - marks["warm"][k]) / added
           for k in keys if marks["end"][k] is not None}
    tmp.cleanup()
    out = {"images": images, "batch": batch, "traced": traced,
           "snapshot_every": snapshot_every, "marks": marks,
           "images_added": added, "per_image_bytes": per}
    if not traced:
        return out
    tracemalloc.stop()
    filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    end, warm = snaps["end"].filter_traces(filt), snaps["warm"].filter_traces(filt)

    def diff(key: str) -> list[dict]:
        return [{"where": str(d.traceback[0]) if key == "lineno" else d.traceback[0].filename,
                 "size_diff": d.size_diff, "count_diff": d.count_diff}
                for d in end.compare_to(warm, key)[:top]]

    return {**out, "top_lines": diff("lineno"), "top_files": diff("filename")}


def write_trace_markdown(tr: dict, path: Path) -> None:
    w, e, per = tr["marks"]["warm"], tr["marks"]["end"], tr["per_image_bytes"]
    mb = 2**20
    trim = (f"; after malloc_trim {w['rss_after_trim'] / mb:.1f} → "
            f"{e['rss_after_trim'] / mb:.1f} MB" if "rss_after_trim" in per else "")
    lines = [
        f"# What grows: {tr['images']} uploads through the engine"
        f"{' under tracemalloc' if tr['traced'] else ''}",
        "",
        f"`{tr['command']}`. Warm = after the first two batches of {tr['batch']}; "
        f"{tr['images_added']} images added between warm and end"
        + (f"; a snapshot after every {tr['snapshot_every']} batches."
           if tr.get("snapshot_every") else "; no snapshots."),
        "",
        "| per added image | bytes |",
        "|---|---|",
        *([f"| traced heap (Python + numpy) | {per['traced_bytes']:.0f} |"]
          if tr["traced"] else []),
        f"| RSS | {per['rss']:.0f} |",
        *([f"| RSS after malloc_trim(0) | {per['rss_after_trim']:.0f} |"]
          if "rss_after_trim" in per else []),
        f"| index (memory.stats bytes) | {per['index_bytes']:.0f} |",
        f"| records (memory.stats bytes, estimate) | {per['records_bytes']:.0f} |",
        "",
        f"RSS warm → end: {w['rss'] / mb:.1f} → {e['rss'] / mb:.1f} MB{trim}"
        + (f"; traced heap {w['traced_bytes'] / mb:.1f} → {e['traced_bytes'] / mb:.1f} MB."
           if tr["traced"] else "."),
        "",
    ]
    if not tr["traced"]:
        path.write_text("\n".join(lines))
        return
    lines += [
        "| top growth by line | size diff (kB) | blocks |",
        "|---|---|---|",
        *[f"| `{d['where']}` | {d['size_diff'] / 1024:.1f} | {d['count_diff']:+d} |"
          for d in tr["top_lines"]],
        "",
        "| top growth by file | size diff (kB) | blocks |",
        "|---|---|---|",
        *[f"| `{d['where']}` | {d['size_diff'] / 1024:.1f} | {d['count_diff']:+d} |"
          for d in tr["top_files"]],
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dupstream.bench.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--backlog", type=int, default=400,
                    help="events kept ahead of the service (also pre-loaded before it starts)")
    ap.add_argument("--pool", type=int, default=256, help="distinct JPEGs the events reuse")
    ap.add_argument("--snapshot-interval", type=float, default=120.0,
                    help="the service's DUPSTREAM_STATE__SNAPSHOT_INTERVAL_S")
    ap.add_argument("--out", help="results path without suffix (default results/soak-<N>min)")
    ap.add_argument("--servers", default="soak",
                    help="the local servers' folder under .servers/ (two soaks at once: two names)")
    ap.add_argument("--render", metavar="JSON",
                    help="re-summarise a saved run (its samples) and rewrite its .json/.md/.png")
    ap.add_argument("--trace", type=int, metavar="IMAGES",
                    help="instead of the soak: IMAGES uploads through the engine in this process "
                         "under tracemalloc, what grows (results/soak-trace.{json,md})")
    ap.add_argument("--no-tracemalloc", action="store_true",
                    help="with --trace: RSS and RSS after malloc_trim only (no tracemalloc)")
    ap.add_argument("--trace-snapshot-every", type=int, default=0, metavar="BATCHES",
                    help="with --trace: write a snapshot after every BATCHES batches")
    a = ap.parse_args(argv)
    if a.trace:
        tr = trace_growth(images=a.trace, pool_size=a.pool, traced=not a.no_tracemalloc,
                          snapshot_every=a.trace_snapshot_every)
        tr["command"] = "python -m dupstream.bench.soak " + " ".join(argv or sys.argv[1:])
        out = Path(a.out or "results/soak-trace")
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(json.dumps(tr, indent=1))
        write_trace_markdown(tr, Path(f"{out}.md"))
        print(Path(f"{out}.md").read_text())
        return 0
    if a.render:
        out = Path(a.render.removesuffix(".json"))
        res = json.loads(Path(a.render).read_text())
        return _write(res, out)
    out = Path(a.out or f"results/soak-{a.minutes:g}min")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = run_soak(minutes=a.minutes, interval_s=a.interval, backlog=a.backlog,
                   pool_size=a.pool, snapshot_interval_s=a.snapshot_interval,
                   log_path=Path(f"{out}.service.log"), servers=a.servers)
    res["started_utc"] = started
    #: service settings and allocator variables given to this run (the child inherits them)
    res["env"] = {k: v for k, v in sorted(os.environ.items())
                  if k.startswith(("DUPSTREAM_", "MALLOC_")) or k == "LD_PRELOAD"}
    res["command"] = "python -m dupstream.bench.soak " + " ".join(argv or sys.argv[1:])
    res["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                      f"{platform.python_version()}, nice {os.nice(0)}")
    return _write(res, out)


def _write(res: dict, out: Path) -> int:
    summary = summarise(res)
    res["summary"] = summary
    Path(f"{out}.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, summary, Path(f"{out}.md"))
    plot(res, summary, Path(f"{out}.png"))
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
