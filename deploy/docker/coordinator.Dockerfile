# fm-coordinator (and fmctl, for `docker exec ... fmctl status` and one-shot
# jobs), FROM scratch. `make images` builds the binaries (fm-coordinator
# static, fmctl with cgo) and stages bin/deploy/rootfs-coordinator: the
# directories, an unprivileged user (65532) and the C libraries fmctl needs.
FROM scratch
COPY --chown=65532:65532 bin/deploy/rootfs-coordinator/ /
COPY bin/deploy/healthcheck bin/deploy/fm-coordinator bin/deploy/fmctl /usr/local/bin/
ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
USER 65532:65532
WORKDIR /var/lib/fmtrain
VOLUME /var/lib/fmtrain
# 7000 raft, 7070 HTTP: worker API, /healthz, /readyz, /v1/status.
EXPOSE 7000 7070
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:7070/readyz"]
ENTRYPOINT ["/usr/local/bin/fm-coordinator"]
