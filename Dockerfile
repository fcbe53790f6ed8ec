# One image for both roles: the compose file picks `grape` or `node` as the command.
# Only the package is copied (see .dockerignore), so a local .venv or data/ never leaks in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY p2p_offers ./p2p_offers
RUN pip install . && useradd --system --create-home --home-dir /home/p2p p2p \
    && mkdir -p /data && chown p2p /data

USER p2p
VOLUME ["/data"]
ENTRYPOINT ["p2p-offers"]
CMD ["--help"]
