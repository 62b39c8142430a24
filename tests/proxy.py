"""A TCP proxy for fault injection: forwards 127.0.0.1:port -> upstream, and can drop every
connection or block traffic (connections stall, new ones hang) for a while."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class TcpProxy:
    def __init__(self, *, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", listen_port))
        self._lsock.listen(128)
        self.port = self._lsock.getsockname()[1]
        self._blocked = threading.Event()
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.drops = 0
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            while self._blocked.is_set() and not self._closing.is_set():
                time.sleep(0.05)  # new connections hang while blocked
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._closing.is_set():
                if self._blocked.is_set():
                    time.sleep(0.05)  # traffic stalls, connections stay open
                    continue
                for key, _ in sel.select(timeout=0.1):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns -= {a, b}

    def drop(self) -> None:
        """Reset every open connection now."""
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.drops += 1

    def block(self, seconds: float) -> None:
        """Stall all traffic and new connections for ``seconds`` (in the background)."""
        self._blocked.set()
        threading.Timer(seconds, self._blocked.clear).start()

    def close(self) -> None:
        self._closing.set()
        self._lsock.close()
        self.drop()
