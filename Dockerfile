# syntax=docker/dockerfile:1.7
#
# medimg container images: one build, three targets.
#
#   api   the REST API only (uv member medimg-api). No torch: small and quick to pull. It also
#         runs the one-shot `migrate` step (migrations + bundled model registration), which
#         is torch-free too, so models/ ships in it.
#   cpu   worker + trainer + api (medimg-worker, medimg-trainer, medimg-api) for CPU nodes.
#   cuda  the same environment for GPU nodes; see "Torch" below for how it differs.
#
#   docker build --target api  -t medimg-api:0.1.0  .
#   docker build --target cpu  -t medimg-cpu:0.1.0  .
#   docker build --target cuda -t medimg-cuda:0.1.0 .
#
# The command picks the service; every image's default CMD is the service it is meant for,
# and docker-compose.yml / k8s/ pass the exact argv of services/cli/src/cli/services.py.
#
# Torch: uv.lock pins PyPI's Linux torch wheel, which is the CUDA 13 build and pulls the
# CUDA user-space libraries (cuBLAS, cuDNN, NCCL, ...) as nvidia-* wheels, several GB in all.
# It runs unchanged on machines without a GPU. A slim CPU-only image would need torch from
# PyTorch's CPU index, which the lock does not pin; installing it would put unlocked, unhashed
# packages into a clinical service. So `cpu` and `cuda` carry the same locked
# environment: `cpu` trades image size for reproducibility. `cuda` differs in what it tells
# the NVIDIA Container Toolkit: expose the GPUs and require a driver new enough for CUDA 13.
# No nvidia/cuda base image is used: it would add a second, separately versioned copy of the
# CUDA runtime next to the one torch loads from its own wheels; the toolkit injects the
# host's driver (libcuda) into any image.

# uv, the same version the Makefile installs.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---------------------------------------------------------------------------------------------
# Build stages: resolve nothing, install exactly what uv.lock pins into /opt/venv.
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build-base
COPY --from=uv /uv /usr/local/bin/uv
# Byte-compile at build time (the runtime filesystem is read-only); copy instead of
# hard-linking out of the cache mount; never download a Python, use the image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Only the manifests first, so the dependency layer is rebuilt when uv.lock changes, not on
# every source edit. uv needs every workspace member's pyproject.toml to read the workspace.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/api/pyproject.toml services/api/
COPY services/worker/pyproject.toml services/worker/
COPY services/trainer/pyproject.toml services/trainer/
COPY services/cli/pyproject.toml services/cli/
COPY services/gateway/pyproject.toml services/gateway/

FROM build-base AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package medimg-api --package medimg-gateway
COPY shared/src shared/src
COPY services/api/src services/api/src
COPY services/gateway/src services/gateway/src
# --no-editable: the workspace packages are installed into site-packages, so the runtime
# stage needs /opt/venv only, not the source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package medimg-api --package medimg-gateway

FROM build-base AS build-ml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace \
        --package medimg-worker --package medimg-trainer --package medimg-api
COPY shared/src shared/src
COPY services/api/src services/api/src
COPY services/worker/src services/worker/src
COPY services/trainer/src services/trainer/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
        --package medimg-worker --package medimg-trainer --package medimg-api

# ---------------------------------------------------------------------------------------------
# Runtime: the same base image as build-base (keep the two FROM lines in step: the venv links
# to that interpreter), no uv, no compilers, no source tree; a fixed non-root UID that
# Kubernetes can verify (runAsNonRoot).
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 medimg \
    && useradd --system --no-log-init --uid 10001 --gid medimg \
        --home-dir /home/medimg --create-home --shell /usr/sbin/nologin medimg \
    && mkdir -p /data/store /opt/torch-cache \
    && chown -R medimg:medimg /data
# MEDIMG_BUNDLED_MODELS_DIR is explicit: shared.config derives its default from the source
# checkout layout, which an installed package does not have. /data/store is created owned by
# medimg so an empty named volume mounted there starts out writable.
# TORCH_HOME: where ImageNet checkpoints for training are looked up (hub/checkpoints/<file>),
# never downloaded; an optional read-only mount (compose: TORCH_CACHE_DIR; Kubernetes:
# components/torch-cache). The API reads the same path to refuse jobs whose file is missing.
# MPLCONFIGDIR: Matplotlib (training curves) needs a writable cache; /tmp is the writable one.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/opt/torch-cache \
    MEDIMG_ENVIRONMENT=production \
    MEDIMG_DATA_DIR=/data \
    MEDIMG_STORE_DIR=/data/store \
    MEDIMG_BUNDLED_MODELS_DIR=/app/models
WORKDIR /app
COPY models/ /app/models/
VOLUME ["/data/store"]
USER 10001:10001

FROM runtime AS api
COPY --from=build-api /opt/venv /opt/venv
EXPOSE 8000
# Liveness only (/healthz): readiness (/readyz) depends on Postgres and Redis and belongs to
# the orchestrator. No curl in the image: the interpreter does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--workers", "1", "--no-access-log", "--timeout-graceful-shutdown", "10"]

FROM runtime AS cpu
COPY --from=build-ml /opt/venv /opt/venv
# A CPU worker scheduled on a GPU host must not take the GPU: the NVIDIA runtime exposes none
# to this image. The other two are services.worker()'s environment for the default command.
ENV NVIDIA_VISIBLE_DEVICES=void \
    MEDIMG_WORKER_CONCURRENCY=2 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=67108864
# Whichever Celery node this container runs (cpu@, gpu@ or train@ + hostname, as `-n <queue>@%h`
# names it) must answer a ping through the broker. The probe builds its Celery app with
# shared.queueing, whose transport options it needs, instead of `celery -A worker.celery_app`:
# that import loads torch, tens of seconds and ~0.9 GB per probe.
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys; from shared.queueing import make_celery; h = socket.gethostname(); sys.exit(not make_celery('probe', os.environ['REDIS_URL']).control.ping(destination=[q + '@' + h for q in ('cpu', 'gpu', 'train')], timeout=5))"]
CMD ["python", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "-n", "cpu@%h", "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]

FROM runtime AS cuda
COPY --from=build-ml /opt/venv /opt/venv
# Read by the NVIDIA Container Toolkit: which GPUs and driver libraries to inject, and the
# minimum driver (CUDA 13 needs >= 580), checked before the container starts. Kubernetes'
# device plugin narrows NVIDIA_VISIBLE_DEVICES to the GPU the pod was given.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0" \
    MEDIMG_WORKER_CONCURRENCY=2 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=67108864
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys; from shared.queueing import make_celery; h = socket.gethostname(); sys.exit(not make_celery('probe', os.environ['REDIS_URL']).control.ping(destination=[q + '@' + h for q in ('cpu', 'gpu', 'train')], timeout=5))"]
CMD ["python", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "-n", "gpu@%h", "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
