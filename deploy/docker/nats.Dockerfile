# nats-server v2.15 with JetStream for the compose cluster, FROM scratch:
# bin/deploy/nats-server is github.com/nats-io/nats-server/v2 built static
# from fmtrain's go.mod by `make images`.
FROM scratch
COPY --chown=65532:65532 bin/deploy/rootfs-static/ /
COPY bin/deploy/healthcheck bin/deploy/nats-server /usr/local/bin/
USER 65532:65532
VOLUME /var/lib/nats
EXPOSE 4222 8222
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8222/healthz?js-enabled-only=true"]
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--jetstream", "--store_dir", "/var/lib/nats", "--http_port", "8222"]
