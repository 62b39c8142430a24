"""Running a built server on uvicorn until SIGINT/SIGTERM, then closing it: the requests in hand
are finished, the replica's producer flushed and its record writes drained; exit code 0 (uvicorn
itself would re-raise the signal after its shutdown and skip the close)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn

from dupstream.serve.build import Server


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {s: signal.signal(s, self.handle_exit)
                    for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in original.items():
                signal.signal(s, handler)


def serve_forever(server: Server, *, host: str, port: int, access_log: bool = False,
                  log_level: str = "warning", grace_s: int = 10) -> None:
    config = uvicorn.Config(server.asgi, host=host, port=port, log_level=log_level,
                            access_log=access_log, timeout_graceful_shutdown=grace_s)
    try:
        _Uvicorn(config).run()
    finally:
        server.close()
