# syntax=docker/dockerfile:1
# STOW-RS and DELETE service: python -m noctis_stow, HTTP on port 8080.
# Build from the repository root, which every image needs for libs/common and
# constraints.txt:  docker build -f docker/stow.Dockerfile -t noctis/stow .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY constraints.txt ./
COPY libs/common libs/common
COPY services/stow services/stow
# Wheels of the Noctis packages and every dependency, at the versions the tests ran with.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt \
    ./libs/common ./services/stow

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOCTIS_HTTP_HOST=0.0.0.0 \
    NOCTIS_HTTP_PORT=8080 \
    NOCTIS_DATA_DIR=/var/lib/noctis
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels noctis-stow
RUN useradd --system --uid 10001 --user-group --no-create-home noctis \
    && install -d -o noctis -g noctis /var/lib/noctis
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "noctis_common.healthcheck"]
CMD ["python", "-m", "noctis_stow"]
