# kayle-webhooks: one image for the receiver (`serve`, the default) and the workers (`worker`).
#
#   docker build -t kayle-webhooks .
#   docker build --build-arg PLUGINS="./examples/kayle_example_plugin" -t kayle-webhooks:example .
#
# PLUGINS: pip requirement specifiers of the handler plugins the workers load, installed into the
# same virtual environment: package names from your index, or source trees kept under ./plugins/.
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module.

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
ARG PLUGINS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The context is what .dockerignore lets in: the project, examples/ and plugins/.
COPY . ./
# hadolint ignore=SC2086
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . ${PLUGINS} \
    && /opt/venv/bin/kayle-webhooks --help > /dev/null

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KAYLE_KEY_DIR=/keys
RUN groupadd --gid 10001 kayle \
    && useradd --no-log-init --uid 10001 --gid kayle --home-dir /home/kayle --create-home \
       --shell /usr/sbin/nologin kayle \
    && mkdir -p /keys /data \
    && chown kayle:kayle /data
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
# 8000: the webhook port. The admin listener (/healthz, /readyz, /metrics) is on 127.0.0.1:9000 unless
# KAYLE_ADMIN_HOST / KAYLE_ADMIN_PORT say otherwise.
EXPOSE 8000
# The receiver's liveness, on its admin listener from inside the container: set the admin port with
# KAYLE_ADMIN_PORT (not --admin-port) so that this check follows it.
# (Worker containers have no HTTP endpoint: disable the check for them, as compose.yaml does.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('KAYLE_ADMIN_PORT', '9000') + '/healthz', timeout=4)"]
CMD ["kayle-webhooks", "serve", "--host", "0.0.0.0", "--port", "8000"]
