# syntax=docker/dockerfile:1
# Operations tools: index migrations (python -m noctis_common.db upgrade, the default
# command, run by the chart's pre-install/pre-upgrade Job) and backups
# (python -m noctis_common.backup, run by the backup CronJob). Debian's PostgreSQL 15
# client supplies pg_dump and pg_restore; pg_dump must be at least the server's major
# version, so build from a base with a newer client for a newer server.
# Build from the repository root:  docker build -f docker/tools.Dockerfile -t noctis/tools .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
# Wheels of the Noctis packages and every dependency, at the versions the tests ran with.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt ./libs/common

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOCTIS_DATA_DIR=/var/lib/noctis
RUN apt-get update \
    && apt-get install --yes --no-install-recommends postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels noctis-common
RUN useradd --system --uid 10001 --user-group --no-create-home noctis \
    && install -d -o noctis -g noctis /var/lib/noctis
USER 10001:10001
# A job runs to completion and serves no endpoint, so there is nothing to probe.
HEALTHCHECK NONE
CMD ["python", "-m", "noctis_common.db", "upgrade"]
