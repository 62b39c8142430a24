"""Scalability: ``dupstream scan`` (the production engine: decode, hash, embed, detect, index,
judge) over N images, each size in its own process; wall time and the child's peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dupstream.lab.data.edits import encode


def measure(images: list[np.ndarray], sizes: tuple[int, ...], *, threads: int = 2) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, rgb in enumerate(images[: max(sizes)]):
            Path(tmp, f"{i:06d}.jpg").write_bytes(encode(rgb, "JPEG", 92))
        files = sorted(Path(tmp).glob("*.jpg"))
        for n in sizes:
            if n > len(files):
                continue
            sub = Path(tmp, f"n{n}")
            sub.mkdir()
            for f in files[:n]:
                os.link(f, sub / f.name)
            cmd = [sys.executable, "-m", "dupstream", "scan", str(sub), "--out", os.devnull,
                   "-q", "--threads", str(threads)]
            log = Path(tmp, f"n{n}.log")
            t0 = time.perf_counter()
            with open(log, "wb") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={
                    **os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"scan of {n} images failed: {log.read_text()[-2000:]}")
            rows.append({"images": n, "wall_s": wall, "per_image_ms": wall / n * 1e3,
                         "peak_rss_mib": usage.ru_maxrss / 1024})
    if len(rows) >= 2:
        x = np.asarray([r["images"] for r in rows], float)
        t = np.asarray([r["wall_s"] for r in rows])
        slope, intercept = np.polyfit(x, t, 1)
        for r in rows:
            r["fit"] = f"{intercept:.1f} s + {slope * 1e3:.0f} ms x N"
    return rows
