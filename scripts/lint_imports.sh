#!/usr/bin/env bash
# The layer contract (pyproject.toml [tool.importlinter]) checked on the layout that ships: the
# project is installed into a scratch folder exactly as the wheel lays it out (stream/, workers/,
# state/ and bench/ mapped under dupstream/), and lint-imports reads that tree. In a checkout the
# same folders are reached through the symlinks dupstream/{stream,workers,state,bench}, so a bare
# `lint-imports` there reads the same modules; this script also checks that the wheel's only
# top-level package is `dupstream`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --no-compile --target "$TMP/site" . >"$TMP/pip.log" 2>&1 || { cat "$TMP/pip.log"; exit 1; }
rm -rf build  # setuptools' scratch folder
top="$(cat "$TMP"/site/dupstream-*.dist-info/top_level.txt 2>/dev/null || true)"
if [ -n "$top" ] && [ "$top" != "dupstream" ]; then
  echo "lint-imports: the wheel's top level is '$top', expected only 'dupstream'" >&2
  exit 1
fi
cd "$TMP/site"
PYTHONPATH="$TMP/site" "$OLDPWD/$VENV/bin/lint-imports" "$OLDPWD/pyproject.toml" --no-cache
