# syntax=docker/dockerfile:1
# Build: the same `cargo build --release` CI runs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Dependencies first, in their own layer, on placeholder sources: a change to src/ alone
# rebuilds from here on, not every crate of the lockfile.
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
# COPY keeps the files' times, which may be older than the placeholders' build: touch them.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked
# The shipped config keeps its queue in data/ beside it: point that at the volume, owned by
# the runtime's non-root user (distroless has no shell to do this later).
RUN mkdir -p /out/etc/pagerhook /out/var/lib/pagerhook && ln -s /var/lib/pagerhook /out/etc/pagerhook/data

# Runtime: distroless with glibc and CA certificates (PagerDuty and SNS are https), no shell,
# running as the image's non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
# Where the image was built from: `docker build --build-arg SOURCE=... --build-arg REVISION=...`
# (deploy/README.md, "The image", passes the clone's remote and commit).
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="pagerhook" \
      org.opencontainers.image.description="Verify webhooks and deliver them to PagerDuty Events API v2, in order, without losing one." \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /etc/pagerhook
COPY --from=build /src/target/release/pagerhook /usr/local/bin/pagerhook
COPY pagerhook.toml /etc/pagerhook/pagerhook.toml
COPY mappings /etc/pagerhook/mappings
COPY --from=build /out/etc/pagerhook/data /etc/pagerhook/data
COPY --from=build --chown=65532:65532 /out/var/lib/pagerhook /var/lib/pagerhook
# distroless's nonroot, by number: Kubernetes' runAsNonRoot can check a number, not a name.
USER 65532:65532
# Config and mappings are read from /etc/pagerhook; the queue lives in /var/lib/pagerhook.
VOLUME ["/var/lib/pagerhook"]
ENV PAGERHOOK_CONFIG=/etc/pagerhook/pagerhook.toml
EXPOSE 8080 8081
# distroless has no shell or curl: the binary checks its own admin listener.
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/pagerhook", "health"]
ENTRYPOINT ["/usr/local/bin/pagerhook"]
CMD ["serve"]
