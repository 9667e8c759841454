# fmtrain — build, test, lint, bench.
# `make test` is the command CI runs (through .ci/run) and the README promises.

GO        ?= go
PKGS      ?= ./...
# cgo is needed by go-nvml (it dlopens libnvidia-ml at run time; no NVIDIA
# headers or libraries are needed to build). Its vendored header is noisy.
export CGO_CFLAGS ?= -Wno-deprecated-declarations
BIN       := bin

.PHONY: all build test test-short lint vet fmt bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

test:
	$(GO) vet $(PKGS)
	$(GO) test -race -timeout 14m $(PKGS)
	@# Allocation counts are meaningless under -race, so the zero-allocation
	@# tests skip there; run them again without it.
	$(GO) test -count=1 -timeout 5m -run 'DoesNotAllocate|DoNotAllocate' ./kernels/ ./model/ ./collective/

# Faster inner loop without the race detector.
test-short:
	$(GO) test -timeout 10m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w .

lint: vet
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchtime 10x $(PKGS)

clean:
	rm -rf $(BIN)

# Compile cuda/prototypes.h against Debian's real CUDA headers (fetched once,
# headers only, from bookworm non-free through a private apt sources file).
.PHONY: cuda-headers-check
cuda-headers-check:
	./scripts/cuda-headers-check.sh

# Images, the compose cluster and the multi-host test (needs Docker).
include deploy/deploy.mk

# Bind the CUDA driver, cuBLAS(Lt) and NVRTC libraries from Debian (unpacked
# into a cache, not installed) and compile every .cu kernel with NVRTC: the
# GPU path's checks that need the libraries but no GPU.
.PHONY: cuda-libs-check
cuda-libs-check:
	./scripts/cuda-libs-check.sh
