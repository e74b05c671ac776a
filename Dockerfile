# trackhook: a slim, non-root image. `docker compose up` (docker-compose.yml) runs it with
# PostgreSQL; alone it serves with SQLite in the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 trackhook \
    && useradd --system --uid 10001 --gid trackhook --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin trackhook \
    && mkdir /data \
    && chown trackhook:trackhook /data

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Editable install on purpose: the migrations are found next to the package
# (app/core/migrations.py looks for /app/alembic.ini and /app/migrations).
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN pip install --no-deps -e . \
    && python -c "import app.main"

# The default SQLite file lives in a writable volume; DATABASE_URL overrides it.
ENV DATABASE_URL=sqlite+aiosqlite:////data/trackhook.db
VOLUME ["/data"]

USER trackhook
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

CMD ["trackhook", "serve", "--host", "0.0.0.0"]
