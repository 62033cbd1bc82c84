# syntax=docker/dockerfile:1.7
# The kwire node daemon image. From the repository root:
#
#   docker build -f images/node.Dockerfile -t kwire/node:0.1.0 .
#
# Debian bookworm with Debian's wireguard-go (the userspace fallback where
# the node has no WireGuard kernel module) and wireguard-tools (`wg`, for
# looking at a node by hand: kubectl exec ... -- wg show). The daemon runs as
# root inside the container but the chart grants it only NET_ADMIN, not
# privileged mode.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kwire-node-daemon --bin kwire-node \
    && install -D -m 0755 target/release/kwire-node /out/kwire-node

FROM debian:bookworm-slim
# Versions come from the bookworm release the base image pins; pinning exact
# package versions here would break the build at every Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        iproute2 \
        wireguard-go \
        wireguard-tools \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/kwire-node /usr/local/bin/kwire-node
# Metrics, /healthz and /readyz on the node's addresses (host network).
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/kwire-node"]
