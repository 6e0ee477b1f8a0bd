# syntax=docker/dockerfile:1
#
# docker build -t ucdn-prefetch-exporter:0.1.0 .
# docker run --rm --read-only -p 9866:9866 ucdn-prefetch-exporter:0.1.0 --demo
#
# Both stages use the same base image: a virtual environment is not relocatable, and its
# interpreter link must point at the same Python in the stage that runs it.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore is an allow-list: only the package sources and their metadata arrive here.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .
# The venv gets no pip or setuptools of its own: the runtime image needs neither. Its
# dependencies are exactly those of requirements.lock, every file checked against its hash
# (make lock regenerates it); the package itself then adds none (--no-deps).
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --require-hashes --no-deps -r requirements.lock \
    && pip --python /opt/venv/bin/python install --no-deps /wheels/*.whl

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ucdn-prefetch-exporter" \
      org.opencontainers.image.description="Prometheus exporter for CDN prefetch (cache warm-up) tasks of UCloud-compatible UCDN gateways" \
      org.opencontainers.image.source="https://github.com/ucdn-prefetch-exporter/ucdn-prefetch-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID/GID lets Kubernetes verify runAsNonRoot and lets operators grant
# file access (a mounted web config, a secrets directory) to a known ID.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter
COPY --from=build /opt/venv /opt/venv
# No bytecode writes, so a read-only root filesystem costs nothing; unbuffered, so log
# lines reach `docker logs` as they happen.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9866
# Liveness only: /-/healthy never calls the upstream API, while a scrape of /metrics would.
# The healthcheck mode reads the same UCDN_EXPORTER_LISTEN_ADDRESS and web config file
# (UCDN_EXPORTER_WEB_CONFIG_FILE) as the server, so it follows the port, TLS and basic auth
# without edits; set those two by environment, not flags (HEALTHCHECK does not see flags).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ucdn-prefetch-exporter", "healthcheck"]
ENTRYPOINT ["ucdn-prefetch-exporter"]
