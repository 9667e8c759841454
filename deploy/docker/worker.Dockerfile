# fm-worker for CPU hosts, FROM scratch. The binary is dynamically linked
# (go-nvml needs cgo; the CPU kernels dlopen OpenBLAS), so `make images`
# stages bin/deploy/rootfs-worker with the dynamic loader, libc and
# libopenblas.so.0 (+ its libgfortran) copied from the build host. NVML is
# simply not found at run time here, and the worker runs on the CPU.
FROM scratch
COPY --chown=65532:65532 bin/deploy/rootfs-worker/ /
COPY bin/deploy/healthcheck bin/deploy/fm-worker /usr/local/bin/
ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
USER 65532:65532
WORKDIR /var/lib/fmtrain
# 7100 the gradient ring, 7080 /healthz and /readyz.
EXPOSE 7100 7080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:7080/readyz"]
ENTRYPOINT ["/usr/local/bin/fm-worker"]
