# syntax=docker/dockerfile:1
#
# One image for every sluice process. There is deliberately no ENTRYPOINT: the command
# picks the binary, for example
#   docker run --rm sluice:local sluice-planner
#   docker run --rm sluice:local sluicectl jobs list
# Binaries: sluice-planner, sluice-fetcher, sluice-loader, sluicectl, sluice-sandbox.
#
# Build:  docker build -t sluice:local .      (BuildKit is required for the cache mounts)

############################ builder ############################
FROM rust:1-bookworm AS builder

# aws-lc-sys (TLS, via rustls) builds with cc on x86_64/aarch64 Linux; cmake is its
# fallback build path on other targets, so have it available.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry, git checkouts and target/ live in cache mounts, so rebuilds are
# incremental. A cache mount is not part of the image, so the binaries are copied out
# of target/ in the same RUN. The root package (the e2e harness) is not the default
# build target for the services, so the binary packages are named explicitly.
RUN --mount=type=cache,id=sluice-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=sluice-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=sluice-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p sluice-planner -p sluice-fetcher -p sluice-loader -p sluicectl -p sluice-sandbox \
 && mkdir -p /out \
 && for bin in sluice-planner sluice-fetcher sluice-loader sluicectl sluice-sandbox; do \
        cp "target/release/$bin" /out/; \
    done

############################ runtime ############################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to the outside APIs, S3 and managed RabbitMQ/Postgres.
# curl: container healthchecks (docker compose) against the admin port.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# Fixed numeric ids so Kubernetes can verify runAsNonRoot.
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin sluice \
 && mkdir -p /var/cache/sluice-sandbox \
 && chown 10001:10001 /var/cache/sluice-sandbox

COPY --from=builder /out/ /usr/local/bin/

# In a container the admin servers must listen on all interfaces (the built-in defaults
# are 127.0.0.1). Each process reads only its own setting.
ENV SLUICE__PLANNER__ADMIN_BIND=0.0.0.0:9101 \
    SLUICE__FETCHER__ADMIN_BIND=0.0.0.0:9102 \
    SLUICE__LOADER__ADMIN_BIND=0.0.0.0:9103

# Admin ports (planner, fetcher, loader) and the sandbox.
EXPOSE 9101 9102 9103 9200

USER 10001:10001
WORKDIR /tmp

# Harmless default; every deployment sets its own command.
CMD ["sluicectl", "--help"]
