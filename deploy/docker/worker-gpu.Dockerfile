# fm-worker for NVIDIA GPU hosts. Not built by `make images` (no registry
# here to pull the base from); build it where nvcr.io or Docker Hub is reachable:
#
#   make deploy-binaries-gpu        # fm-worker with cgo (go-nvml), bin/deploy/gpu/
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t fmtrain/worker-gpu:dev .
#   docker run --gpus all fmtrain/worker-gpu:dev --device=cuda:0 --coordinator=...
#
# fmtrain needs no CUDA toolkit at build time: it loads libcuda (mounted by
# the NVIDIA Container Toolkit), cuBLAS/cuBLASLt, NVRTC and NCCL at run time
# with purego, so the runtime flavour of the CUDA image is enough (it carries
# cuBLAS, NVRTC and NCCL). Keep the base's CUDA major version at or below the
# driver's.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 fmtrain && useradd -u 65532 -g 65532 -d /var/lib/fmtrain -m fmtrain \
 && mkdir -p /shared && chown 65532:65532 /shared
COPY bin/deploy/healthcheck bin/deploy/gpu/fm-worker /usr/local/bin/
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
WORKDIR /var/lib/fmtrain
EXPOSE 7100 7080
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:7080/readyz"]
ENTRYPOINT ["/usr/local/bin/fm-worker"]
