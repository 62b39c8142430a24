"""Local development servers (Tansu Kafka broker + moto S3) on free ports, via scripts/servers.sh.

Used by the demo and the end-to-end benchmark; the tests start their own in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

#: the source checkout (this file: dupstream/lab/devservers.py): its .servers/ and scripts/
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_servers(name: str = "dev") -> Iterator[tuple[str, str]]:
    """Start both servers; yield (kafka bootstrap, s3 endpoint); stop them by PID."""
    kport, sport = free_port(), free_port()
    srv = ROOT / ".servers" / name
    srv.mkdir(parents=True, exist_ok=True)
    for sub in ("bin", "moto"):  # reuse the binaries installed by scripts/setup.sh
        link = srv / sub
        if not link.exists():
            link.symlink_to(ROOT / ".servers" / sub)
    env = {**os.environ, "KAFKA_PORT": str(kport), "S3_PORT": str(sport), "SRV_DIR": str(srv)}
    env.setdefault("PYTHON", "python3")
    script = str(ROOT / "scripts" / "servers.sh")
    subprocess.run([script, "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{kport}", f"127.0.0.1:{sport}"
    finally:
        subprocess.run([script, "stop"], env=env, check=False)


def service_env(
    *,
    bootstrap: str,
    s3: str,
    topics: dict[str, str],
    group: str,
    state_bucket: str,
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a ``dupstream run`` child on local servers: connections, the four
    topics (``uploads``, ``verdicts``, ``dlq``, ``updates``), the group, the state bucket, short
    group timeouts (a join on Tansu takes about half the session timeout), then ``overrides``
    (full ``DUPSTREAM_*`` names)."""
    return {
        **os.environ,
        "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "DUPSTREAM_KAFKA__INPUT_TOPIC": topics["uploads"],
        "DUPSTREAM_KAFKA__OUTPUT_TOPIC": topics["verdicts"],
        "DUPSTREAM_KAFKA__DLQ_TOPIC": topics["dlq"],
        "DUPSTREAM_KAFKA__GROUP_ID": group,
        "DUPSTREAM_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "DUPSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "DUPSTREAM_S3__ENDPOINT": s3,
        "DUPSTREAM_STATE__UPDATES_TOPIC": topics["updates"],
        "DUPSTREAM_STATE__BUCKET": state_bucket,
        **(overrides or {}),
    }
