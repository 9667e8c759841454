# etcd v3.7 for the compose cluster and the multi-host test, FROM scratch:
# bin/deploy/etcd is etcd's own main (deploy/docker/etcd) built static by
# `make images`. Production clusters usually run their existing etcd instead.
FROM scratch
COPY --chown=65532:65532 bin/deploy/rootfs-static/ /
COPY bin/deploy/healthcheck bin/deploy/etcd /usr/local/bin/
USER 65532:65532
# A single member by default (peers on localhost); set ETCD_NAME,
# ETCD_INITIAL_CLUSTER and the peer URLs for a multi-member cluster.
ENV ETCD_DATA_DIR=/var/lib/etcd \
    ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379
VOLUME /var/lib/etcd
EXPOSE 2379 2380
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:2379/health"]
ENTRYPOINT ["/usr/local/bin/etcd"]
