# vivim-node in a container:
#   docker build -t vivim-node .
#   docker run -v vivim-data:/data -p 7717:7717 vivim-node [--bootstrap /ip4/.../tcp/7717/p2p/12D3KooW...]
# The identity is created in the /data volume on first start and reused afterwards. The control API
# listens on the container's loopback only; use `docker exec <container> vivim-node status`.

FROM python:3.11-slim-bookworm AS build
# py-libp2p builds fastecdsa from source: it needs a C compiler and GMP's headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libgmp-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/vivim
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY node ./node
COPY protocols ./protocols
COPY store ./store
RUN /opt/vivim/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgmp10 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 vivim \
    && mkdir /data && chown vivim:vivim /data
COPY --from=build /opt/vivim /opt/vivim
COPY scripts/docker-entrypoint.sh /usr/local/bin/vivim-entrypoint
ENV PATH=/opt/vivim/bin:$PATH \
    VIVIM_HOME=/data \
    VIVIM_LISTEN=/ip4/0.0.0.0/tcp/7717 \
    PYTHONUNBUFFERED=1
USER vivim
VOLUME ["/data"]
EXPOSE 7717
ENTRYPOINT ["vivim-entrypoint"]
