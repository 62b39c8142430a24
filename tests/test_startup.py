"""Start-up of ``dupstream run``: a down S3 server or broker is reported within the start-up budget
in one actionable line with a documented exit code; SIGINT/SIGTERM during the wait stop it at
once; librdkafka's lines go through Python logging, repeats folded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from dupstream.app.settings import Settings
from dupstream.app.startup import (
    LOCAL_SERVERS_HINT,
    S3Probe,
    probes,
    unavailable_message,
    wait_for_servers,
)
from dupstream.cli import ExitCode, exit_code_for
from dupstream.core.errors import (
    BlobUnavailable,
    ConfigError,
    DeliveryError,
    ModelError,
    ServerUnavailable,
    StateError,
)
from dupstream.lab.devservers import free_port
from dupstream.stream.kafkalog import LibrdkafkaLog

CLI = [sys.executable, "-m", "dupstream", "run"]
BUDGET_S = 5.0
#: interpreter start and imports before the wait begins (a loaded 2-core machine); the models
#: load while the wait runs
SLACK_S = 6.0


# -- the documented exit codes --------------------------------------------------------------------
def test_exit_codes_keep_their_numbers_and_unavailable_is_seven():
    assert [(c.name, c.value) for c in ExitCode] == [
        ("OK", 0), ("INPUT_ERRORS", 1), ("USAGE", 2), ("CONFIG", 3), ("MODEL", 4), ("STATE", 5),
        ("ERROR", 6), ("UNAVAILABLE", 7)]
    assert exit_code_for(ServerUnavailable("x")) is ExitCode.UNAVAILABLE
    assert exit_code_for(BlobUnavailable("x")) is ExitCode.UNAVAILABLE  # past the budget
    assert exit_code_for(DeliveryError("x")) is ExitCode.UNAVAILABLE
    assert exit_code_for(ConfigError("x")) is ExitCode.CONFIG
    assert exit_code_for(ModelError("x")) is ExitCode.MODEL
    assert exit_code_for(StateError("x")) is ExitCode.STATE


def test_the_budget_setting(monkeypatch):
    assert Settings.load().startup.budget_s == 15.0
    monkeypatch.setenv("DUPSTREAM_STARTUP__BUDGET_S", "2.5")
    assert Settings.load().startup.budget_s == 2.5
    monkeypatch.setenv("DUPSTREAM_STARTUP__BUDGET_S", "-1")
    with pytest.raises(ConfigError):
        Settings.load()


# -- the wait loop (pure logic: in-process probes) ------------------------------------------------
class Flaky:
    def __init__(self, name: str, fail_times: int) -> None:
        self.name, self.max_wait_s, self.left, self.calls = name, 0.1, fail_times, 0

    def check(self, timeout_s: float) -> str | None:
        self.calls += 1
        assert 0 < timeout_s <= self.max_wait_s
        if self.left > 0:
            self.left -= 1
            return "Connection refused"
        return None


def test_the_wait_ends_as_soon_as_every_server_answers():
    a, b = Flaky("S3 at h:1 (DUPSTREAM_S3__ENDPOINT)", 2), Flaky("broker", 0)
    waited = wait_for_servers([a, b], budget_s=10)
    assert a.calls == 3 and b.calls == 1  # an answering server is not probed again
    assert waited < 2


def test_the_wait_gives_up_after_the_budget_with_every_failing_server_named():
    a, b = Flaky("S3 at h:1 (DUPSTREAM_S3__ENDPOINT)", 10**6), Flaky("broker b:2 (K)", 0)
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        wait_for_servers([a, b], budget_s=0.6)
    assert 0.6 <= time.monotonic() - t0 < 1.5
    msg = str(info.value)
    assert "S3 at h:1 (DUPSTREAM_S3__ENDPOINT): Connection refused" in msg
    assert "broker" not in msg and "\n" not in msg
    assert LOCAL_SERVERS_HINT in msg and "DUPSTREAM_STARTUP__BUDGET_S" in msg


def test_two_failures_make_one_line():
    msg = unavailable_message({"S3 at a (X)": "refused", "the Kafka broker at b (Y)": "refused"},
                              15)
    assert "\n" not in msg and msg.count("refused") == 2 and "Are they running?" in msg


def test_answers_that_waiting_cannot_change_are_config_errors():
    settings = Settings(s3={"endpoint": "http://127.0.0.1:9000/path"})
    s3 = next(p for p in probes(settings) if isinstance(p, S3Probe))
    with pytest.raises(ConfigError) as info:
        s3.check(1.0)
    assert "DUPSTREAM_S3__ENDPOINT" in str(info.value)
    bad_bucket = Settings(s3={"endpoint": f"127.0.0.1:{free_port()}"},
                          state={"bucket": "Not_A_Bucket!"})
    s3 = next(p for p in probes(bad_bucket) if isinstance(p, S3Probe))
    with pytest.raises(ConfigError) as info:
        s3.check(1.0)
    assert "DUPSTREAM_STATE__BUCKET" in str(info.value)


# -- librdkafka's log lines -----------------------------------------------------------------------
def test_librdkafka_lines_are_folded_and_leveled(caplog):
    logger = logging.getLogger("dupstream.librdkafka.test")
    sink = LibrdkafkaLog(logger, repeat_s=60)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for ms in range(50):
            sink.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                     f"127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection "
                     f"refused (after {ms}ms in state CONNECT)")
        sink.log(30, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "Timed out 1 requests")
    assert [r.levelno for r in caplog.records] == [40, 30]
    assert "Connection refused" in caplog.records[0].getMessage()
    assert sink.last == "Timed out 1 requests"
    sink.repeat_s = 0  # the next repeat is printed, with the count of the folded ones
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        sink.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                 "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
                 "(after 0ms in state CONNECT)")
    assert "and 49 more like it" in caplog.records[-1].getMessage()


def test_the_service_kafka_clients_log_through_python_logging():
    """A producer built with the service's connection keywords, against a closed port: nothing
    from librdkafka on stderr but the folded, formatted lines of the Python logger."""
    code = (
        "import logging, sys, time\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr,\n"
        "                    format='PY %(name)s %(message)s')\n"
        "from confluent_kafka import Producer\n"
        "from dupstream.app.root import kafka_auth\n"
        "from dupstream.app.settings import Settings\n"
        "from dupstream.stream.kafka import producer_config\n"
        f"s = Settings(kafka={{'bootstrap_servers': '127.0.0.1:{free_port()}'}})\n"
        "conf = producer_config(bootstrap_servers=s.kafka.bootstrap_servers, **kafka_auth(s))\n"
        "p = Producer(conf)\n"
        "end = time.monotonic() + 3\n"
        "while time.monotonic() < end:\n"
        "    p.poll(0.1)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("PY dupstream.librdkafka ") for ln in lines), lines
    assert any("Connection refused" in ln for ln in lines)
    assert len(lines) <= 6, lines  # ~60 raw lines in 3 s without folding


# -- `dupstream run` against a closed port --------------------------------------------------------
def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPSTREAM_")}
    return {**env, "DUPSTREAM_STARTUP__BUDGET_S": str(BUDGET_S),
            "DUPSTREAM_MODEL__DETECTOR": "none", "DUPSTREAM_MODEL__GRAPH": "false", **over}


def _run_to_exit(env: dict[str, str]) -> tuple[int, float, list[str]]:
    t0 = time.monotonic()
    res = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=120)
    return res.returncode, time.monotonic() - t0, res.stderr.splitlines()


def _check_one_line(lines: list[str], address: str, setting: str) -> str:
    assert not any("Traceback" in ln for ln in lines), lines
    final = [ln for ln in lines if ln.startswith("dupstream: unavailable: ")]
    assert len(final) == 1, lines
    line = final[0]
    assert address in line and setting in line and "make servers-start" in line
    # the waiting notice, model-load lines, the line: no librdkafka flood
    assert not any("rdkafka" in ln or "FAIL" in ln for ln in lines), lines
    assert len(lines) <= 8, lines
    return line


@pytest.mark.integration
def test_run_with_s3_down_exits_within_the_budget_with_one_line(kafka_bootstrap):
    s3 = f"127.0.0.1:{free_port()}"
    rc, took, lines = _run_to_exit(_env(DUPSTREAM_S3__ENDPOINT=s3,
                                        DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap))
    assert rc == ExitCode.UNAVAILABLE
    assert BUDGET_S <= took < BUDGET_S + SLACK_S, took
    line = _check_one_line(lines, s3, "DUPSTREAM_S3__ENDPOINT")
    assert "Connection refused" in line and "Kafka" not in line  # the broker answered


@pytest.mark.integration
def test_run_with_the_broker_down_exits_within_the_budget_with_one_line(s3_endpoint):
    broker = f"127.0.0.1:{free_port()}"
    rc, took, lines = _run_to_exit(_env(DUPSTREAM_S3__ENDPOINT=s3_endpoint,
                                        DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker))
    assert rc == ExitCode.UNAVAILABLE
    assert BUDGET_S <= took < BUDGET_S + SLACK_S, took
    line = _check_one_line(lines, broker, "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS")
    assert "S3 at" not in line  # S3 answered


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("down", ["s3", "broker"])
def test_a_signal_during_the_wait_exits_promptly(sig, down):
    closed, other = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = _env(DUPSTREAM_STARTUP__BUDGET_S="120",
               DUPSTREAM_S3__ENDPOINT=closed if down == "s3" else other,
               DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS=closed if down == "broker" else other)
    proc = subprocess.Popen(CLI, env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while not any("waiting up to 120 s" in ln for ln in seen):  # the wait has begun
            seen.append(proc.stderr.readline())
            assert seen[-1], seen
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        stopped_after, rest = None, []
        for line in proc.stderr:
            rest.append(line)
            if stopped_after is None and "during start-up" in line:
                stopped_after = time.monotonic() - t0
        rc = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(rest)
    assert rc == ExitCode.OK, text
    assert f"stopped by {sig.name} during start-up" in text and "Traceback" not in text
    # stopped at once (a C call in progress, e.g. a model load, finishes first)
    assert stopped_after is not None and stopped_after < 1.0, (stopped_after, text)
    assert took < 2.0, took
