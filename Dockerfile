# telesafe monitor image.  Build from the repository root:
#   docker build -t telesafe:0.1.0 .
# Used by the Helm chart (helm/telesafe, image.repository/tag). Runs as uid/gid 10001, works
# with a read-only root filesystem (writes only to /data and /tmp).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN python -m venv /opt/telesafe/venv \
 && /opt/telesafe/venv/bin/pip install --no-compile . \
 && /opt/telesafe/venv/bin/python -m compileall -q /opt/telesafe/venv

FROM python:3.11-slim
LABEL org.opencontainers.image.title="telesafe" \
      org.opencontainers.image.description="Safety monitor for remote robotic surgery" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/telesafe/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TELESAFE_RULES=/opt/telesafe/rules \
    TELESAFE_LEDGER=/data/ledger.sqlite \
    TELESAFE_HTTP_HOST=0.0.0.0 \
    TELESAFE_HTTP_PORT=9108 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 telesafe \
 && useradd --system --uid 10001 --gid telesafe --home-dir /data --shell /usr/sbin/nologin telesafe \
 && mkdir -p /data \
 && chown telesafe:telesafe /data \
 && chmod 0750 /data
COPY --from=build /opt/telesafe/venv /opt/telesafe/venv
# The wheel does not ship the policy packs (rules/ is outside the package): copy them and
# point TELESAFE_RULES at them.
COPY rules /opt/telesafe/rules
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9108
ENTRYPOINT ["telesafe"]
CMD ["run"]
