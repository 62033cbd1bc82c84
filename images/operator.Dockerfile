# syntax=docker/dockerfile:1.7
# The kwire operator image. From the repository root:
#
#   docker build -f images/operator.Dockerfile -t kwire/operator:0.1.0 .
#
# Static-ish Rust binary (rustls, no OpenSSL) on distroless/cc, which has the
# C runtime the binary links against and nothing else; runs as the
# unprivileged user 65532 ("nonroot"), which the chart also enforces.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target folder between builds; the
# binary is copied out of the (unsaved) target mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kwire-operator --bin kwire-operator \
    && install -D -m 0755 target/release/kwire-operator /out/kwire-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kwire-operator /usr/local/bin/kwire-operator
USER 65532:65532
# Metrics, /healthz and /readyz (the chart passes --metrics-addr 0.0.0.0:8080).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kwire-operator"]
