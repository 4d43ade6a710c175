# syntax=docker/dockerfile:1
# DIMSE gateway: python -m noctis_ingest_scp. DICOM on port 11112, DICOM TLS on 2762 when
# NOCTIS_DIMSE_TLS_PORT is set to it, /metrics and /health/* on port 9090.
# Build from the repository root, which every image needs for libs/common and
# constraints.txt:  docker build -f docker/ingest-scp.Dockerfile -t noctis/ingest-scp .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
COPY services/ingest-scp services/ingest-scp
# Wheels of the Noctis packages and every dependency, at the versions the tests ran with.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt \
    ./libs/common ./services/ingest-scp

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOCTIS_DIMSE_HOST=0.0.0.0 \
    NOCTIS_DIMSE_PORT=11112 \
    NOCTIS_HTTP_HOST=0.0.0.0 \
    NOCTIS_METRICS_PORT=9090 \
    NOCTIS_DATA_DIR=/var/lib/noctis
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels noctis-ingest-scp
RUN useradd --system --uid 10001 --user-group --no-create-home noctis \
    && install -d -o noctis -g noctis /var/lib/noctis
USER 10001:10001
EXPOSE 11112 2762 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "noctis_common.healthcheck", "--port-setting", "metrics_port"]
CMD ["python", "-m", "noctis_ingest_scp"]
