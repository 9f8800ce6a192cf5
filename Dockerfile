# syntax=docker/dockerfile:1
# canary-guard image: built with the Rust toolchain on Debian 12, run on distroless
# (glibc + libgcc only, no shell) as the unprivileged user 65532.
# Base images are pinned by tag; see the README to pin them by digest.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# The same command scripts/check-image runs outside a container. Default features: the
# image keeps `demo`, which only that command starts (README, "The image").
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0555 target/release/canary-guard /canary-guard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /canary-guard /usr/local/bin/canary-guard
USER 65532:65532
# 4680: proxy, 4681: admin (/metrics, /healthz, /readyz, /v1/state).
EXPOSE 4680 4681
ENTRYPOINT ["/usr/local/bin/canary-guard"]
CMD ["run"]
