"""Run a Milvus standalone server (PyPI ``milvus`` 2.3.x) on 127.0.0.1 until SIGTERM/SIGINT.

The embedded etcd's client and peer ports (fixed at 2379/2380 by default, so a second server
on the machine fails) are free ports given through an etcd config file (``ETCD_CONFIG_PATH``);
the package picks free ports for the other components itself.

Runs with the interpreter of the venv that holds the ``milvus`` package (scripts/servers.sh puts
it in .servers/milvus). Every component is bound to 127.0.0.1 (by default the server advertises
a non-loopback address). Once it answers, the proxy port is written to ``--ready-file``; a
SIGTERM stops it through ``MilvusServer.stop`` (a bare SIGTERM to the binary can hang) and
removes the ``milvus/server_id_<pid>`` file it leaves in the temp folder.

    python scripts/milvus_server.py --data-dir DIR --port 19530 [--ready-file F]
        [--time-tick-ms 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _etcd_config(data_dir: str) -> tuple[str, int]:
    client, peer = _free_port(), _free_port()
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "embedEtcd.yaml")
    c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    with open(path, "w") as f:
        f.write(f"name: default\ndata-dir: {os.path.join(data_dir, 'etcd-embed')}\n"
                f"listen-client-urls: {c}\nadvertise-client-urls: {c}\n"
                f"listen-peer-urls: {p}\ninitial-advertise-peer-urls: {p}\n"
                f"initial-cluster: default={p}\n")
    return path, client


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, default=19530)
    ap.add_argument("--ready-file")
    ap.add_argument("--time-tick-ms", type=int, default=None,
                    help="proxy time tick (Milvus default 200 ms): a Strong search waits for it")
    args = ap.parse_args()
    from milvus import MilvusServer, MilvusServerConfig

    data_dir = os.path.abspath(args.data_dir)
    etcd_conf, etcd_port = _etcd_config(data_dir)
    os.environ["ETCD_CONFIG_PATH"] = etcd_conf
    cfg = MilvusServerConfig(data_dir=data_dir)
    cfg.set("etcd_port", etcd_port)
    for c in COMPONENTS:
        cfg.set(f"{c}.ip", "127.0.0.1")
    cfg.set("proxy.port", args.port)
    if args.time_tick_ms:
        cfg.set("proxy.timeTickInterval", args.time_tick_ms)
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
