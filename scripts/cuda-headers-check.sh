#!/usr/bin/env bash
# cuda-headers-check.sh: compile cuda/prototypes.h (every C prototype and
# constant fmtrain binds through purego) against Debian's real CUDA headers,
# so a wrong signature fails loudly here instead of corrupting memory on a GPU.
#
# Debian ships the headers in nvidia-cuda-dev (bookworm, non-free). The
# non-free component is added in a private apt sources file used by this
# script alone (the system's sources stay as they are), and only the .deb's
# include/ folder is unpacked under $CACHE: none of its dependencies (driver
# libraries that would change how this host looks to fmtrain) are installed.
# nccl.h is not in Debian; set NCCL_INCLUDE=dir to check the NCCL part too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-nonfree-apt.sh

CACHE=${CUDA_HEADERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fmtrain/cuda-headers}
INC=$CACHE/usr/include
mkdir -p "$CACHE"

if [ ! -f "$INC/cuda.h" ] || [ ! -f "$INC/cublasLt.h" ]; then
	APT=$CACHE/apt
	mkdir -p "$APT/archives/partial"
	echo "cuda-headers-check: fetching nvidia-cuda-dev (bookworm non-free, ~770 MB, headers only are kept)"
	nonfree_apt "$APT" -o "Dir::Cache::Archives=$APT/archives"
	(cd "$APT" && apt-get "${APT_OPTS[@]}" -q download nvidia-cuda-dev)
	dpkg-deb --fsys-tarfile "$APT"/nvidia-cuda-dev_*.deb | tar -x -C "$CACHE" --wildcards './usr/include/*'
	rm -f "$APT"/nvidia-cuda-dev_*.deb
fi
version=$(sed -n 's/^#define CUDA_VERSION \([0-9]*\).*/\1/p' "$INC/cuda.h")

extra=()
nccl="not checked (Debian has no nccl.h; set NCCL_INCLUDE=dir holding nccl.h)"
if [ -n "${NCCL_INCLUDE:-}" ]; then
	extra=(-DFMTRAIN_CHECK_NCCL -I"$NCCL_INCLUDE")
	nccl="checked against $NCCL_INCLUDE/nccl.h"
fi
gcc -std=c11 -Wall -Werror -fsyntax-only -I"$INC" "${extra[@]}" cuda/headercheck/check.c
n=$(sed '/^#ifdef FMTRAIN_CHECK_NCCL/,$d' cuda/prototypes.h | grep -E '^[A-Za-z_][A-Za-z_0-9 *]*\(.*\);$' | grep -vc -e '^FMT_CONST' -e '^_Static_assert')
echo "cuda-headers-check: OK: $n prototypes in cuda/prototypes.h match CUDA $version headers (cuda.h, cublas_v2.h, cublasLt.h, nvrtc.h); NCCL: $nccl"
