"""Load benchmark of the lookup server (``dupstream serve``) on loopback: a fixed duration per
concurrency level, httpx async clients each sending POST /v1/lookup (multipart) back to back.
Prints and writes p50/p99 latency and requests/s per level.

The server is a real ``dupstream serve`` process on local servers (the Tansu broker and moto S3
binaries that scripts/setup.sh installs under .servers/, started here on free ports and stopped
by PID) with a small index (real photos added over POST /v1/images); every
query is an edited copy (crop, caption, resize) of one of them.

    python -m dupstream.bench.serve_load [--clients 1,8,32] [--duration 20] \\
        [--detector yolov3_tiny|none] [--embedder sscd|sscd_distilled] [--out results/serve_load]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

TOKEN = "bench-token-0123456789"
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "china", "grace_hopper"]


def _queries() -> tuple[dict[str, bytes], list[bytes]]:
    from dupstream.lab.data import edits
    from dupstream.lab.data.photos import load_photos

    photos = load_photos(PHOTOS)
    rng = np.random.default_rng(0)
    originals = {n: edits.encode(p, "JPEG", 92) for n, p in photos.items()}
    queries = []
    for p in photos.values():
        for edit in (edits.crop, edits.caption, edits.resize):
            queries.append(edits.encode(edit(p, rng), "JPEG", 88))
    return originals, queries


async def _level(base: str, queries: list[bytes], clients: int, duration_s: float) -> dict:
    lat: list[float] = []
    codes: dict[int, int] = {}
    stop_at = time.perf_counter() + duration_s
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        n = i
        while time.perf_counter() < stop_at:
            data = queries[n % len(queries)]
            n += clients
            t0 = time.perf_counter()
            r = await http.post(f"{base}/v1/lookup", headers=headers,
                                files={"image": ("q.jpg", data, "image/jpeg")})
            dt = time.perf_counter() - t0
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                lat.append(dt)
            elif r.status_code == 503:
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*[client(i, http) for i in range(clients)])
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {"clients": clients, "duration_s": round(wall, 2), "ok": len(lat),
            "status_counts": {str(k): v for k, v in sorted(codes.items())},
            "req_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None}


@contextlib.contextmanager
def _local_servers(tmp: Path) -> Iterator[tuple[str, str]]:
    """Tansu (in-memory storage) and moto on free ports of 127.0.0.1; stopped by PID."""
    from dupstream.lab.devservers import ROOT, free_port

    srv = ROOT / ".servers"
    kport, sport = free_port(), free_port()
    url = f"tcp://127.0.0.1:{kport}"
    procs = [
        subprocess.Popen([str(srv / "bin" / "tansu"), "broker", "--listener-url", url,
                          "--advertised-listener-url", url, "--storage-engine", "memory://b/"],
                         stdout=open(tmp / "tansu.log", "wb"), stderr=subprocess.STDOUT),
        subprocess.Popen([str(srv / "moto" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p",
                          str(sport)], stdout=open(tmp / "moto.log", "wb"),
                         stderr=subprocess.STDOUT),
    ]
    try:
        deadline = time.monotonic() + 30
        for port in (kport, sport):
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} did not open")
                time.sleep(0.05)
        yield f"127.0.0.1:{kport}", f"127.0.0.1:{sport}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dupstream serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("dupstream serve not ready")


def run(*, clients: list[int], duration_s: float, detector: str, embedder: str,
        batch_max: int, log_path: Path) -> dict:
    from dupstream.lab.devservers import free_port

    originals, queries = _queries()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with _local_servers(log_path.parent) as (bootstrap, s3):
        env = {**os.environ,
               "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "DUPSTREAM_S3__ENDPOINT": s3,
               "DUPSTREAM_STATE__UPDATES_TOPIC": "servebench.index-updates",
               "DUPSTREAM_STATE__BUCKET": "servebench-state",
               "DUPSTREAM_MODEL__DETECTOR": detector, "DUPSTREAM_MODEL__EMBEDDER": embedder,
               "DUPSTREAM_SERVE__BATCH_MAX": str(batch_max),
               "DUPSTREAM_SERVE__TOKENS": json.dumps([{"token": TOKEN, "tenant": "bench"}])}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dupstream", "serve", "--host",
                                     "127.0.0.1", "--port", str(port), "--create-topics"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_ready(base, proc)
                headers = {"Authorization": f"Bearer {TOKEN}"}
                for name, data in originals.items():
                    r = httpx.post(f"{base}/v1/images", params={"image_id": name},
                                   headers=headers, timeout=120,
                                   files={"image": ("o.jpg", data, "image/jpeg")})
                    r.raise_for_status()
                asyncio.run(_level(base, queries, 1, 3.0))  # warm-up, not reported
                levels = []
                for n in clients:
                    res = asyncio.run(_level(base, queries, n, duration_s))
                    print(json.dumps(res), flush=True)
                    levels.append(res)
                metrics = httpx.get(f"{base}/metrics").text
            finally:
                proc.terminate()
                proc.wait(60)
    batches = [ln for ln in metrics.splitlines()
               if ln.startswith("dupstream_serve_batch_size_requests_")
               and not ln.startswith("dupstream_serve_batch_size_requests_bucket")]
    return {"levels": levels, "batch_size_metric": batches,
            "config": {"detector": detector, "embedder": embedder, "batch_max": batch_max,
                       "duration_s": duration_s, "index_images": len(originals),
                       "queries": len(queries)},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    ap.add_argument("--detector", default="yolov3_tiny")
    ap.add_argument("--embedder", default="sscd")
    ap.add_argument("--batch-max", type=int, default=8)
    ap.add_argument("--out", default="results/serve_load")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = run(clients=[int(x) for x in args.clients.split(",")], duration_s=args.duration,
              detector=args.detector, embedder=args.embedder, batch_max=args.batch_max,
              log_path=out / "server.log")
    res["command"] = " ".join(["python -m dupstream.bench.serve_load", *(argv or sys.argv[1:])])
    (out / "serve_load.json").write_text(json.dumps(res, indent=1))
    print("| clients | req/s | p50 ms | p99 ms | 200 | 503 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lv in res["levels"]:
        sc = lv["status_counts"]
        print(f"| {lv['clients']} | {lv['req_per_s']} | {lv['p50_ms']} | {lv['p99_ms']} | "
              f"{sc.get('200', 0)} | {sc.get('503', 0)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
