# provenance-monitor: slim, non-root, CPU-only torch.
FROM python:3.11-slim

# torch from PyPI is a multi-GB CUDA build on x86_64; point TORCH_INDEX_URL at PyTorch's CPU
# wheel index (or a mirror of it) to keep the image lean.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MONITOR_DB=/var/lib/provenance-monitor/registry.db

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/provenance-monitor \
        --create-home --shell /usr/sbin/nologin monitor

WORKDIR /opt/provenance-monitor
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY crawlers ./crawlers
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" \
    && pip install . \
    && rm -rf /root/.cache

USER 10001:10001
VOLUME ["/var/lib/provenance-monitor"]
HEALTHCHECK --interval=60s --timeout=10s --retries=3 CMD ["monitor", "--version"]
ENTRYPOINT ["monitor"]
CMD ["run-once"]
