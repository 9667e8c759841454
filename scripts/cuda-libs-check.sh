#!/usr/bin/env bash
# cuda-libs-check.sh: without a GPU, check the CUDA bindings against the real
# libraries: Debian's NVIDIA driver userspace (libcuda1), cuBLAS/cuBLASLt and
# NVRTC (bookworm non-free) are unpacked under $CACHE (nothing is installed
# on the system), then
#   - cuda.TestRealLibraries loads each one and binds every symbol of
#     cuda/prototypes.h (cuInit then fails for want of a GPU, as it should);
#   - kernels/cuda.TestNVRTCCompilesKernels compiles every .cu kernel with the
#     real NVRTC for sm_80 and sm_90 (CUBIN) and compute_90 (PTX).
# The non-free component lives in a private apt sources file used only here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-nonfree-apt.sh

CACHE=${CUDA_LIBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fmtrain/cuda-libs}
LIBS=$CACHE/lib
PKGS=(libcuda1 libnvidia-ptxjitcompiler1 libnvrtc11.2 libnvrtc-builtins11.8 libcublas11 libcublaslt11)
mkdir -p "$LIBS"

if [ ! -f "$CACHE/.done" ]; then
	APT=$CACHE/apt
	mkdir -p "$APT/debs" "$CACHE/root"
	echo "cuda-libs-check: fetching ${PKGS[*]} (bookworm non-free, ~280 MB)"
	nonfree_apt "$APT"
	(cd "$APT/debs" && apt-get "${APT_OPTS[@]}" -q download "${PKGS[@]}")
	for d in "$APT"/debs/*.deb; do dpkg-deb -x "$d" "$CACHE/root"; done
	# Debian keeps the driver's libraries under nvidia/current; gather every
	# shared object (and its soname links) in one folder.
	find "$CACHE/root" \( -type f -o -type l \) -name '*.so*' -exec cp -P {} "$LIBS/" \;
	rm -rf "$APT/debs" "$CACHE/root"
	touch "$CACHE/.done"
fi
for f in "$LIBS"/*; do echo "  ${f##*/}"; done
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FMTRAIN_CUDA_LIBS_CHECK=1
go test -count=1 -v -run 'TestRealLibraries|TestNVRTCCompilesKernels' ./cuda/ ./kernels/cuda/
echo "cuda-libs-check: OK"
