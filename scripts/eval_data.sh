#!/usr/bin/env bash
# Real images for `dupstream eval` that ship inside Debian packages (nothing else is downloaded):
#   darknet                 -> .data/packaged/darknet/*.jpg     (multi-object COCO-style photos)
#   opencv-doc              -> .data/packaged/opencv/*          (scenes, objects; vtest.avi, tree.avi)
#   tuxpaint-stamps-default -> .data/packaged/stamps/<theme>/*.png (RGBA object cut-outs)
# The packages are fetched with `apt-get download` (not installed) and only these files are kept.
# Idempotent; without apt-get the evaluation still runs on the pip-packaged images alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${DUPSTREAM_DATA_DIR:-.data}/packaged"
if [ -f "$DEST/.complete" ]; then
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
echo "eval-data: extracted into $DEST ($(du -sh "$DEST" | cut -f1))"
