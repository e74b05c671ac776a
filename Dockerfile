# trackhook: a slim, non-root image. `docker compose up` (docker-compose.yml) runs it with
# PostgreSQL; alone it serves with SQLite in the /data volume. docs/OPERATIONS.md, Containers.
#
# The base is a build argument so a release build can pin it by digest
# (--build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...); every Python package is pinned and
# hashed in requirements.lock (`make lock`).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

RUN groupadd --system --gid 10001 trackhook \
    && useradd --system --uid 10001 --gid trackhook --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin trackhook \
    && mkdir /data \
    && chown trackhook:trackhook /data

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. --require-hashes: every
# package, dependencies included, must be in the lock with its hash, or the build stops.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Editable install on purpose: the migrations are found next to the package
# (app/ledger/migrations.py looks for /app/alembic.ini and /app/migrations). No build isolation:
# the build backend is the locked setuptools, not whatever PyPI serves that day. `pip check`
# stops the build when pyproject.toml asks for a package the lock lacks (run `make lock`).
COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN pip install --no-deps --no-build-isolation -e . \
    && pip check \
    && python -c "import app.main"

# The probe reads the port from the server's command line (`--port`), then $PORT, then 8000.
COPY deploy/healthcheck.py /usr/local/bin/trackhook-healthcheck

# The default SQLite file lives in a writable volume; DATABASE_URL overrides it.
ENV DATABASE_URL=sqlite+aiosqlite:////data/trackhook.db
VOLUME ["/data"]

# Numeric, so Kubernetes can check runAsNonRoot without a runAsUser of its own.
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["trackhook-healthcheck"]

# `exec`: the server is PID 1 and gets SIGTERM itself (graceful shutdown).
CMD ["sh", "-c", "exec trackhook serve --host 0.0.0.0 --port \"$PORT\""]
