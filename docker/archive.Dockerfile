# syntax=docker/dockerfile:1
# The whole archive in one process: python -m noctis_archive (what `make run` starts).
# DICOMweb on port 8080, DICOM on 11112, data under /var/lib/noctis (mount a volume there).
# Build from the repository root, which every image needs for libs/common and
# constraints.txt:  docker build -f docker/archive.Dockerfile -t noctis/archive .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
COPY services/ingest-scp services/ingest-scp
COPY services/qido services/qido
COPY services/wado services/wado
COPY services/stow services/stow
COPY services/events services/events
COPY services/auth services/auth
COPY services/archive services/archive
# Wheels of the Noctis packages and every dependency, at the versions the tests ran with.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt \
    ./libs/common ./services/ingest-scp ./services/qido ./services/wado ./services/stow \
    ./services/events ./services/auth ./services/archive

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOCTIS_HTTP_HOST=0.0.0.0 \
    NOCTIS_HTTP_PORT=8080 \
    NOCTIS_DIMSE_HOST=0.0.0.0 \
    NOCTIS_DIMSE_PORT=11112 \
    NOCTIS_DATA_DIR=/var/lib/noctis
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels noctis-archive
RUN useradd --system --uid 10001 --user-group --no-create-home noctis \
    && install -d -o noctis -g noctis /var/lib/noctis
USER 10001:10001
VOLUME /var/lib/noctis
EXPOSE 8080 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "noctis_common.healthcheck"]
CMD ["python", "-m", "noctis_archive"]
