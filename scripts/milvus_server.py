"""Run a Milvus standalone server (PyPI ``milvus`` 2.3.x) on 127.0.0.1 until SIGTERM/SIGINT.

Runs with the interpreter of the venv that holds the ``milvus`` package (scripts/servers.sh puts
it in .servers/milvus). Every component is bound to 127.0.0.1 (by default the server advertises
a non-loopback address). Once it answers, the proxy port is written to ``--ready-file``; a
SIGTERM stops it through ``MilvusServer.stop`` (a bare SIGTERM to the binary can hang) and
removes the ``milvus/server_id_<pid>`` file it leaves in the temp folder.

    python scripts/milvus_server.py --data-dir DIR --port 19530 [--ready-file F]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, default=19530)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    from milvus import MilvusServer, MilvusServerConfig

    cfg = MilvusServerConfig(data_dir=os.path.abspath(args.data_dir))
    for c in COMPONENTS:
        cfg.set(f"{c}.ip", "127.0.0.1")
    cfg.set("proxy.port", args.port)
    srv = MilvusServer(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    srv.start()
    pid = srv.server_proc.pid if srv.server_proc else None
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{args.port}\n")
        os.replace(tmp, args.ready_file)
    print(f"milvus: ready on 127.0.0.1:{args.port} (pid {pid})", flush=True)
    try:
        while not stop.wait(0.5):
            if srv.server_proc is None or srv.server_proc.poll() is not None:
                print("milvus: the server exited", file=sys.stderr, flush=True)
                return 1
    finally:
        srv.stop()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(tempfile.gettempdir(), "milvus", f"server_id_{pid}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
