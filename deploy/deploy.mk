# Container images, the local compose cluster and the multi-host test.
# Included by the top-level Makefile. Docker is needed only by these targets.
#
#   make images          static binaries + FROM-scratch images (no registry needed)
#   make cluster-up      etcd, NATS, 3 coordinators, 3 CPU workers on one Docker host
#   make cluster-down    stop and remove them, volumes included
#   make test-multihost  the fault tests across those containers, and the Slurm
#                        script run for real with srun/scontrol stand-ins (skipped without Docker)
#   make images-clean    remove the images

DEPLOY_BIN      := $(BIN)/deploy
FMTRAIN_TAG     ?= dev
export FMTRAIN_TAG
CLUSTER_PROJECT ?= fmtrain
COMPOSE         ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
CLUSTER         := $(COMPOSE) -p $(CLUSTER_PROJECT) -f deploy/docker/compose.yaml
# The classic builder works on every Docker Engine (BuildKit needs buildx,
# which Debian's docker.io lacks); the images are a few COPYs either way.
DOCKER_BUILDKIT ?= 0
DOCKER_BUILD    := DOCKER_BUILDKIT=$(DOCKER_BUILDKIT) docker build -q
STATIC_GO       := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w'
# fm-worker and fmctl link go-nvml, which needs cgo, and dlopen OpenBLAS/CUDA:
# they are dynamically linked whatever we do, so rootfs.sh ships their C
# libraries. netgo/osusergo keep name and user lookups in Go (no NSS modules
# in a scratch image).
CGO_GO          := CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo -ldflags '-s -w'
IMAGES          := etcd nats coordinator worker

.PHONY: deploy-binaries deploy-binaries-gpu images images-clean cluster-up cluster-down test-multihost

# etcd and nats-server are built from fmtrain's go.mod (deploy/docker/etcd is
# etcd's main), so the images need nothing but the Go module proxy.
deploy-binaries:
	$(STATIC_GO) -o $(DEPLOY_BIN)/ ./cmd/fm-coordinator \
		./deploy/docker/healthcheck ./deploy/docker/etcd github.com/nats-io/nats-server/v2
	$(CGO_GO) -o $(DEPLOY_BIN)/ ./cmd/fm-worker ./cmd/fmctl
	deploy/docker/rootfs.sh $(DEPLOY_BIN)/rootfs-static
	deploy/docker/rootfs.sh $(DEPLOY_BIN)/rootfs-coordinator $(DEPLOY_BIN)/fm-coordinator $(DEPLOY_BIN)/fmctl
	deploy/docker/rootfs.sh $(DEPLOY_BIN)/rootfs-worker --lib libopenblas.so.0 $(DEPLOY_BIN)/fm-worker

# The GPU worker links go-nvml (cgo); deploy/docker/worker-gpu.Dockerfile uses it.
deploy-binaries-gpu:
	$(CGO_GO) -o $(DEPLOY_BIN)/gpu/ ./cmd/fm-worker

images: deploy-binaries
	@for i in $(IMAGES); do \
		echo "docker build fmtrain/$$i:$(FMTRAIN_TAG)"; \
		$(DOCKER_BUILD) --label fmtrain.deploy=1 -f deploy/docker/$$i.Dockerfile -t fmtrain/$$i:$(FMTRAIN_TAG) . >/dev/null || exit 1; \
	done
	@# Rebuilding leaves the previous images untagged: drop them.
	@docker image prune -f --filter label=fmtrain.deploy=1 >/dev/null

images-clean:
	-docker rmi $(foreach i,$(IMAGES),fmtrain/$(i):$(FMTRAIN_TAG))
	-docker image prune -f --filter label=fmtrain.deploy=1

cluster-up: images
	$(CLUSTER) up -d
	deploy/docker/wait-healthy.sh $(CLUSTER_PROJECT) 180
	@echo "fmtrain cluster up: etcd http://127.0.0.1:2379, NATS nats://127.0.0.1:4222, coordinators http://127.0.0.1:7070-7072"

cluster-down:
	$(CLUSTER) down -v --remove-orphans

# Not part of `make test` (it takes minutes). .ci/run runs it when Docker is there.
test-multihost:
	@if ! docker info >/dev/null 2>&1; then \
		echo "test-multihost: SKIPPED: Docker is not available here (docker info failed)"; exit 0; fi; \
	$(GO) vet -tags multihost ./deploy/multihost/ && \
	$(MAKE) images && \
	FMTRAIN_COMPOSE="$(COMPOSE)" $(GO) test -tags multihost -count=1 -v -timeout 40m ./deploy/multihost/
