# provenance-monitor: python:3.11-slim, CPU-only torch, non-root, the daemon by default.
#
#   docker build -t provenance-monitor:0.1.0 .
#   docker run -d --name provenance-monitor -v provenance-monitor-data:/data \
#       -v "$PWD/monitor.toml:/etc/provenance-monitor/monitor.toml:ro" \
#       -v "$PWD/secrets:/run/secrets/provenance-monitor:ro" -e HF_TOKEN_FILE=/run/secrets/provenance-monitor/hf_token \
#       provenance-monitor:0.1.0                      # `monitor daemon`
#   docker run --rm -v provenance-monitor-data:/data provenance-monitor:0.1.0 run-once
#
# Two stages: the build stage installs into a venv (pip, wheels and sources stay behind); the
# final stage copies only the venv, at the same path as the systemd install.

FROM python:3.11-slim AS build

# PyTorch's CPU wheel index: torch from PyPI is a multi-GB CUDA build on x86_64. Pinned like the
# Makefile's torch==2.13.0; pyproject only asks for torch>=2.4, so `pip install .` keeps it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/provenance-monitor/.venv
ENV PATH=/opt/provenance-monitor/.venv/bin:$PATH

RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY crawlers ./crawlers
# Non-editable: the venv holds a real copy of the package, /src is not needed at run time.
RUN pip install . \
    && python -c "import monitor, crawlers, torch; assert not torch.cuda.is_available()"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="provenance-monitor" \
      org.opencontainers.image.description="Finds stolen copies of the machine-learning models you own." \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001 is what config/kubernetes/ runs as (runAsUser, fsGroup).
RUN groupadd --system --gid 10001 monitor \
    && useradd --system --uid 10001 --gid monitor --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin monitor \
    && mkdir -p /data /etc/provenance-monitor \
    && chown monitor:monitor /data \
    && chmod 0700 /data

COPY --from=build /opt/provenance-monitor/.venv /opt/provenance-monitor/.venv
# Every key with its default and no crawler enabled; mount your own file over it.
COPY config/monitor.example.toml /etc/provenance-monitor/monitor.toml

ENV PATH=/opt/provenance-monitor/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MONITOR_DB=/data/registry.db \
    MONITOR_CONFIG=/etc/provenance-monitor/monitor.toml \
    MONITOR_LOG_FORMAT=json \
    MONITOR_DAEMON_LISTEN=0.0.0.0:9108 \
    HOME=/data \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HOME=/tmp/huggingface

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# /healthz and /metrics (Prometheus); reachable from outside only when published (-p 9108:9108).
EXPOSE 9108
# `monitor health` exits 0 when the daemon's /healthz answers 200. A container running
# `run-once` instead of the daemon reports unhealthy: that one is meant to exit, not to serve.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 CMD ["monitor", "health"]
ENTRYPOINT ["monitor"]
CMD ["daemon"]
