# flarebus: one image for every role (engine, worker, sampler); the role is the command.
#   docker build -t flarebus .
#   docker run --rm flarebus --help
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY flarebus ./flarebus
COPY cli ./cli
COPY engine ./engine
COPY actions ./actions
COPY samplers ./samplers
COPY rules ./rules
COPY schemas ./schemas
RUN pip install . \
    && useradd --create-home --uid 10001 flarebus \
    && mkdir -p /var/lib/flarebus /etc/flarebus \
    && chown flarebus /var/lib/flarebus

USER flarebus
WORKDIR /var/lib/flarebus
ENTRYPOINT ["flarebus"]
CMD ["--help"]
