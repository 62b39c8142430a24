"""Start-up of ``dupstream run``: wait (a short, configurable budget) for the servers the service
needs, then fail with one actionable line; and stop at once on SIGINT/SIGTERM meanwhile.

Torch-free on purpose: the wait runs before the models are imported, so a down server is
reported in seconds, not after the model load.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from dupstream.app.settings import Settings
from dupstream.core.errors import (
    BlobAccessDenied,
    BlobError,
    BlobUnavailable,
    ConfigError,
    ServerUnavailable,
)
from dupstream.state.objectstore import S3ObjectStore
from dupstream.stream.kafkalog import LibrdkafkaLog

log = logging.getLogger("dupstream")

#: how to get local servers, for the message
LOCAL_SERVERS_HINT = "start the local servers with `make servers-start`"
BUDGET_SETTING = "DUPSTREAM_STARTUP__BUDGET_S"
#: the pause between two rounds of probes
PAUSE_S = 0.25


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: not an error
    """SIGINT or SIGTERM during start-up. A ``BaseException`` so that no ``except Exception``
    on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} during start-up")
        self.signum = signum


@contextlib.contextmanager
def interruptible() -> Iterator[Callable[[Callable[..., Any]], None]]:
    """While the block runs, SIGINT and SIGTERM raise ``Interrupted`` wherever the main thread
    is (a sleep, a socket wait, a model load). Yields ``hand_over(handler)``: install the
    running service's own handler before leaving the block. Without a hand-over the previous
    handlers come back."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handed_over = False

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    def hand_over(handler: Callable[..., Any]) -> None:
        nonlocal handed_over
        for s in previous:
            signal.signal(s, handler)
        handed_over = True

    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield hand_over
    finally:
        if not handed_over:
            for s, h in previous.items():
                signal.signal(s, h)


# -- probes ----------------------------------------------------------------------------------------
class Probe(Protocol):
    """One server start-up waits for."""

    #: what the message calls it: the address and the setting that names it
    name: str
    #: the longest one ``check`` may block
    max_wait_s: float

    def check(self, timeout_s: float) -> str | None:
        """None when the server answered, else a short reason."""
        ...


def _short(text: str) -> str:
    """The useful end of a transport error: '[Errno 111] Connection refused', 'timed out'."""
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if m:
        return m.group(0).strip()
    for needle in ("timed out", "Connection refused", "Name or service not known"):
        if needle.lower() in text.lower():
            return needle
    return text[-160:]


@dataclass
class S3Probe:
    """Is the S3 endpoint answering S3 requests (one HEAD of the state bucket)?"""

    endpoint: str
    bucket: str
    make_store: Callable[[float], S3ObjectStore]
    setting: str = "DUPSTREAM_S3__ENDPOINT"
    #: one request's timeout (a signal interrupts a Python socket wait at once)
    max_wait_s: float = 5.0

    @property
    def name(self) -> str:
        return f"S3 at {self.endpoint} ({self.setting})"

    def check(self, timeout_s: float) -> str | None:
        """None when S3 answered; else why not. Raises ``ConfigError`` for answers that waiting
        will not change (credentials refused, an invalid bucket name)."""
        try:
            store = self.make_store(timeout_s)
        except ValueError as exc:  # minio refuses the endpoint itself
            raise ConfigError(f"{self.setting}={self.endpoint!r} is not a valid S3 endpoint "
                              f"(host:port, no scheme or path): {exc}") from exc
        try:
            store.bucket_exists(self.bucket, retries=0)
        except BlobUnavailable as exc:
            return _short(str(exc.__cause__ or exc))
        except BlobAccessDenied as exc:
            raise ConfigError(f"{self.name} refused access to bucket {self.bucket!r}: {exc}; "
                              "check DUPSTREAM_S3__ACCESS_KEY / DUPSTREAM_S3__SECRET_KEY") from exc
        except BlobError as exc:
            raise ConfigError(f"{self.name}: bucket {self.bucket!r} "
                              f"(DUPSTREAM_STATE__BUCKET): {exc.reason}: {exc}") from exc
        return None


@dataclass
class KafkaProbe:
    """Does the broker answer a metadata request?"""

    bootstrap: str
    conf: dict[str, Any]
    setting: str = "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS"
    #: one metadata wait: short, because a signal waits for librdkafka to return
    max_wait_s: float = 0.25
    _admin: Any = field(default=None, repr=False)
    _log: LibrdkafkaLog = field(default_factory=lambda: LibrdkafkaLog(
        logging.getLogger("dupstream.librdkafka.probe")), repr=False)

    @property
    def name(self) -> str:
        return f"the Kafka broker at {self.bootstrap} ({self.setting})"

    def check(self, timeout_s: float) -> str | None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            try:
                self._admin = AdminClient({**self.conf, "bootstrap.servers": self.bootstrap,
                                           "logger": self._log})
            except KafkaException as exc:
                raise ConfigError(f"{self.setting}={self.bootstrap!r} or DUPSTREAM_KAFKA__EXTRA "
                                  f"is not a valid librdkafka configuration: {exc}") from exc
        try:
            self._admin.list_topics(timeout=timeout_s)
            return None
        except KafkaException as exc:
            self._admin.poll(0)  # serve the log queue: the connect error names the cause
            last = self._log.last or ""
            m = re.search(r"failed: (.+?)(?: \(after \d+ms|$)", last)
            return m.group(1) if m else exc.args[0].str() if exc.args else str(exc)

    def close(self) -> None:
        self._admin = None


def probes(settings: Settings) -> list[Probe]:
    """The servers ``dupstream run`` needs, from settings."""
    s3, k = settings.s3, settings.kafka

    def make_store(timeout_s: float) -> S3ObjectStore:
        return S3ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key.get_secret_value(),
                             secret_key=s3.secret_key.get_secret_value(), secure=s3.secure,
                             region=s3.region, timeout_s=timeout_s, retries=0, max_pool=1)

    conf: dict[str, Any] = dict(k.extra)
    if k.sasl_username is not None:
        conf.setdefault("sasl.username", k.sasl_username)
    if k.sasl_password is not None:
        conf.setdefault("sasl.password", k.sasl_password.get_secret_value())
    return [S3Probe(endpoint=s3.endpoint, bucket=settings.state.bucket, make_store=make_store),
            KafkaProbe(bootstrap=k.bootstrap_servers, conf=conf)]


def wait_for_servers(targets: list[Probe], *, budget_s: float,
                     clock: Callable[[], float] = time.monotonic) -> float:
    """Probe every target until all answer or ``budget_s`` has passed; returns the seconds
    waited. Raises ``ServerUnavailable`` with one line: which address failed and why, the
    setting that names it, and how to start the local servers."""
    start = clock()
    deadline = start + budget_s
    pending = list(targets)
    why: dict[str, str] = {}
    announced = False
    try:
        while True:
            for target in list(pending):
                wait_s = max(0.05, min(target.max_wait_s, deadline - clock()))
                detail = target.check(wait_s)
                if detail is None:
                    pending.remove(target)
                    why.pop(target.name, None)
                    if announced:
                        log.info("%s answers", target.name)
                else:
                    why[target.name] = detail
            if not pending:
                return clock() - start
            left = deadline - clock()
            if left <= 0:
                raise ServerUnavailable(unavailable_message(why, budget_s))
            if not announced:
                log.warning("waiting up to %.0f s for %s", budget_s,
                            " and ".join(f"{n}: {d}" for n, d in why.items()))
                announced = True
            time.sleep(min(PAUSE_S, left))
    finally:
        for target in targets:
            close = getattr(target, "close", None)
            if close is not None:
                close()


class ServerWait:
    """``wait_for_servers`` on a background thread, so the wait overlaps the model load:
    ``start()`` it first, ``result()`` it when the servers are needed (it re-raises the wait's
    error there, in the calling thread). ``result`` waits in short slices, so a signal handler
    that raises (``interruptible``) interrupts it."""

    def __init__(self, targets: list[Probe], *, budget_s: float) -> None:
        self.targets, self.budget_s = targets, budget_s
        self._waited: float | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dupstream-startup-wait",
                                        daemon=True)

    def _run(self) -> None:
        try:
            self._waited = wait_for_servers(self.targets, budget_s=self.budget_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc

    def start(self) -> ServerWait:
        self._thread.start()
        return self

    def result(self) -> float:
        """Seconds the servers took to answer; raises what the wait raised."""
        while self._thread.is_alive():
            self._thread.join(0.1)
        if self._error is not None:
            raise self._error
        assert self._waited is not None
        return self._waited


def unavailable_message(why: dict[str, str], budget_s: float) -> str:
    what = "; ".join(f"{name}: {detail}" for name, detail in why.items())
    verb, ask = ("does", "Is it") if len(why) == 1 else ("do", "Are they")
    return (f"{what} - {verb} not answer after {budget_s:g} s. {ask} running? "
            f"For local development {LOCAL_SERVERS_HINT}; otherwise fix the setting named in "
            f"brackets (wait longer: {BUDGET_SETTING}).")
