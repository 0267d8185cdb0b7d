# syntax=docker/dockerfile:1
# Build: the same `cargo build --release` CI runs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked
# The shipped config keeps its queue in data/ beside it: point that at the volume, owned by
# the runtime's non-root user (distroless has no shell to do this later).
RUN mkdir -p /out/etc/pagerhook /out/var/lib/pagerhook && ln -s /var/lib/pagerhook /out/etc/pagerhook/data

# Runtime: distroless with glibc and CA certificates (PagerDuty and SNS are https), no shell,
# running as the image's non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /etc/pagerhook
COPY --from=build /src/target/release/pagerhook /usr/local/bin/pagerhook
COPY pagerhook.toml /etc/pagerhook/pagerhook.toml
COPY mappings /etc/pagerhook/mappings
COPY --from=build /out/etc/pagerhook/data /etc/pagerhook/data
COPY --from=build --chown=65532:65532 /out/var/lib/pagerhook /var/lib/pagerhook
USER nonroot:nonroot
# Config and mappings are read from /etc/pagerhook; the queue lives in /var/lib/pagerhook.
VOLUME ["/var/lib/pagerhook"]
ENV PAGERHOOK_CONFIG=/etc/pagerhook/pagerhook.toml
EXPOSE 8080 8081
# distroless has no shell or curl: the binary checks its own admin listener.
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/pagerhook", "health"]
ENTRYPOINT ["/usr/local/bin/pagerhook"]
CMD ["serve"]
