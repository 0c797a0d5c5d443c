# kca: build with the Rust toolchain, run from a small Debian image as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY openapi openapi
COPY web web
RUN cargo build --release --locked --bin kca && strip target/release/kca

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kca --shell /usr/sbin/nologin kca \
    && install -d -o kca -g kca -m 0700 /var/lib/kca
COPY --from=build /src/target/release/kca /usr/local/bin/kca
USER kca
ENV KCA_DATA_DIR=/var/lib/kca \
    KCA_LISTEN=0.0.0.0:8443 \
    KCA_LOG_FORMAT=json
VOLUME ["/var/lib/kca"]
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/kca"]
CMD ["serve"]
