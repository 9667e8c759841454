#!/usr/bin/env bash
# gpu-check.sh: the GPU acceptance run of fmtrain, in one command, under five
# minutes on one H200. It
#   1. builds fmctl and the GPU test binaries (or uses a prebuilt kit, see
#      --build-only, on machines without a Go toolchain);
#   2. checks correctness on the GPU: the kernels conformance suite and the
#      FM-DiT reference vectors, fp32 within 1e-4 relative per tensor, bf16
#      within 2e-2 for the output and loss (5e-2 for gradients, see
#      docs/gpu.md), and the fused AdamW and the EMA against optim's;
#   3. measures the device's bf16 GEMM rate (cuBLAS, 8192³, random data);
#   4. compares the fused attention kernels with the cuBLAS attention path
#      (FMTRAIN_CUDA_ATTENTION=gemm): the fused kernels against the
#      reference and the cuBLAS path, the suites of step 2 again on the
#      cuBLAS path, and both timed at bench-L's shapes;
#   5. times `fmctl bench step` for bench-S, bench-V (CPU and GPU) and
#      bench-L (GPU only), with TFLOP/s and MFU against the measured GEMM
#      rate, beside PyTorch eager (bf16 autocast) on the same GPU when torch
#      is installed, with the GPU memory in use; bench-L once more on the
#      cuBLAS attention path and once with float32 activations
#      (FMTRAIN_CUDA_ACTIVATIONS=fp32, against the default bf16 storage)
#      when the time budget allows;
#   6. runs a two-process NCCL all-reduce when more than one GPU is present;
#   7. prints a short table last.
# The full log goes to $OUT/gpu-check.log when OUT is set (else /tmp).
# Without a GPU it runs the CPU half and reports the GPU rows as skipped.
#
# Usage:
#   scripts/gpu-check.sh                 # everything this machine can run
#   scripts/gpu-check.sh --build-only    # build the kit into .gpucheck/ and stop
# Environment:
#   FMTRAIN_GPUCHECK_DIR    the kit folder (default .gpucheck): bin/ and shared/
#   FMTRAIN_GPUCHECK_CONFIGS  configs to time (default "bench-S bench-V bench-L")
#   FMTRAIN_GPUCHECK_STEPS  timed steps per run (default 10, after 2 warm-up)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
KIT=${FMTRAIN_GPUCHECK_DIR:-$ROOT/.gpucheck}
CONFIGS=${FMTRAIN_GPUCHECK_CONFIGS:-bench-S bench-V bench-L}
STEPS=${FMTRAIN_GPUCHECK_STEPS:-10}
MODE=all
case "${1:-}" in
--build-only) MODE=build ;;
"") ;;
*)
	echo "usage: $0 [--build-only]" >&2
	exit 2
	;;
esac

WORK=$(mktemp -d)
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT"
	LOG=$OUT/gpu-check.log
else
	LOG=$(mktemp /tmp/gpu-check.XXXXXX.log)
fi
RESULTS=$WORK/results.tsv
: >"$RESULTS"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
# On exit: let tee write the last lines (the table) before the script ends.
trap 'exec 1>&- 2>&-; wait "$TEE"; rm -rf "$WORK"' EXIT
FAILED=0

# record NAME STATUS VALUE NOTE: one row of the final table.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
section() { printf '\n=== %s (%ds)\n' "$1" "$SECONDS"; }
fail() {
	FAILED=1
	record "$1" FAIL "${2:-}" "${3:-}"
}

section "environment"
date -u +%FT%TZ
uname -a
echo "cores: $(nproc), $(uptime | sed 's/.*load/load/')"
GPUS=0
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
	GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
echo "GPUs: $GPUS"

section "build"
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}
if command -v go >/dev/null 2>&1; then
	mkdir -p "$KIT/bin"
	go version
	rm -f "$KIT"/bin/*.gz
	if go build -ldflags='-s -w' -o "$KIT/bin/fmctl" ./cmd/fmctl &&
		go test -c -ldflags='-s -w' -o "$KIT/bin/kcuda.test" ./kernels/cuda &&
		go test -c -ldflags='-s -w' -o "$KIT/bin/nccl.test" ./collective/nccl; then
		record build ok "go $(go env GOVERSION)" "fmctl, kernels/cuda and collective/nccl test binaries"
	else
		fail build "" "go build failed"
		MODE=stop
	fi
	# The reference vectors travel in the kit (../shared does not).
	if shared=$(cd "$ROOT/.." && pwd)/shared && [ -d "$shared/testdata/fm-dit" ]; then
		mkdir -p "$KIT/shared/testdata"
		cp -r "$shared/testdata/fm-dit" "$KIT/shared/testdata/"
	fi
elif [ -f "$KIT/bin/fmctl.gz" ] || [ -x "$KIT/bin/fmctl" ]; then
	# Unpack into the work folder: a carried kit may be read-only.
	mkdir -p "$WORK/bin"
	for z in "$KIT"/bin/*.gz; do
		[ -e "$z" ] || continue
		name=${z##*/}
		gunzip -c "$z" >"$WORK/bin/${name%.gz}"
	done
	record build ok "prebuilt kit" "$KIT (no Go toolchain here)"
else
	fail build "" "no Go toolchain and no kit in $KIT (run --build-only where Go is)"
	MODE=stop
fi
if [ -z "${FMTRAIN_SHARED:-}" ] && [ -d "$KIT/shared/testdata/fm-dit" ]; then
	export FMTRAIN_SHARED=$KIT/shared
fi
if [ "$MODE" = build ]; then
	# Compressed, the kit travels well inside a 64 MiB working-tree limit.
	gzip -f "$KIT"/bin/fmctl "$KIT"/bin/kcuda.test "$KIT"/bin/nccl.test
	chmod +x "$KIT"/bin/*.gz
	du -sh "$KIT"
	echo "kit ready in $KIT: carry it to the GPU machine beside the working tree"
	exit "$FAILED"
fi
BIN=$KIT/bin
if [ -d "$WORK/bin" ]; then
	BIN=$WORK/bin
	chmod +x "$BIN"/*
fi
export FMTRAIN_CUDA_CACHE=$WORK/nvrtc

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1]).get(sys.argv[1], ""))' "$1"; }

GEMM_TFLOPS=""
if [ "$MODE" = all ] && [ "$GPUS" -gt 0 ]; then
	section "GPU correctness: conformance, reference vectors (fp32 1e-4, bf16 2e-2/5e-2), fused AdamW"
	if FMTRAIN_REQUIRE_GPU=1 timeout 180 "$BIN/kcuda.test" -test.run '^TestGPU(Conformance|ReferenceVectors|AdamWMatchesOptim|EMAMatchesOptim|ZeroScaleSumSquares)$' -test.v >"$WORK/correct.log" 2>&1; then
		status=ok
	else
		status=FAIL
		FAILED=1
	fi
	cat "$WORK/correct.log"
	for be in cuda-fp32 cuda; do
		worst=$(grep -o "on $be: worst relative error [0-9.e+-]*" "$WORK/correct.log" | awk '{print $NF}' | sort -g | tail -1)
		tol="1e-4 every tensor"
		[ "$be" = cuda ] && tol="2e-2 out and loss, 5e-2 gradients"
		record "vectors $be" "$status" "${worst:-?}" "worst tensor error, tolerance $tol"
	done
	record "conformance+AdamW" "$status" "" "kernelstest.Run on cuda-fp32; fused AdamW vs optim; fused attention"

	section "bf16 GEMM rate (cuBLAS 8192³, random operands)"
	if FMTRAIN_REQUIRE_GPU=1 timeout 120 "$BIN/kcuda.test" -test.run '^$' -test.bench 'BenchmarkGPUGemmBF16' -test.benchtime 50x >"$WORK/gemm.log" 2>&1 &&
		GEMM_TFLOPS=$(grep -o '[0-9.]* TFLOP/s' "$WORK/gemm.log" | awk '{print $1}' | tail -1) && [ -n "$GEMM_TFLOPS" ]; then
		record "bf16 GEMM" ok "${GEMM_TFLOPS} TFLOP/s" "MFU denominator"
	else
		GEMM_TFLOPS=""
		fail "bf16 GEMM" "" "see log"
	fi
	cat "$WORK/gemm.log"

	section "attention: fused kernels vs the cuBLAS path (FMTRAIN_CUDA_ATTENTION=gemm)"
	if FMTRAIN_REQUIRE_GPU=1 timeout 120 "$BIN/kcuda.test" -test.run '^TestGPUFlashAttention$' -test.v >"$WORK/flash.log" 2>&1; then
		status=ok
	else
		status=FAIL
		FAILED=1
	fi
	cat "$WORK/flash.log"
	worst=$(grep -o 'vs the cuBLAS path [0-9.e+-]*' "$WORK/flash.log" | awk '{print $NF}' | sort -g | tail -1)
	record "attention fused" "$status" "${worst:-?}" "worst vs cuBLAS path (fp32 2e-5, bf16 5e-3); vs reference, bit-identical repeats"
	if [ "$status" = FAIL ]; then
		# Time the steps below on an attention that computes the right thing.
		export FMTRAIN_CUDA_ATTENTION=gemm
		record "attention default" note "gemm" "fused kernels failed their check: the step timings below use the cuBLAS path"
	fi
	if FMTRAIN_CUDA_ATTENTION=gemm FMTRAIN_REQUIRE_GPU=1 timeout 120 "$BIN/kcuda.test" -test.run '^TestGPU(Conformance|ReferenceVectors)$' -test.v >"$WORK/gemm-attn.log" 2>&1; then
		status=ok
	else
		status=FAIL
		FAILED=1
	fi
	cat "$WORK/gemm-attn.log"
	for be in cuda-fp32 cuda; do
		worst=$(grep -o "on $be: worst relative error [0-9.e+-]*" "$WORK/gemm-attn.log" | awk '{print $NF}' | sort -g | tail -1)
		record "vectors $be gemm-attn" "$status" "${worst:-?}" "conformance and vectors again, cuBLAS attention"
	done
	if FMTRAIN_REQUIRE_GPU=1 timeout 120 "$BIN/kcuda.test" -test.run '^$' -test.bench 'BenchmarkGPUAttention' -test.benchtime 5x >"$WORK/attn-bench.log" 2>&1; then
		for shape in self cross; do
			for impl in fused gemm; do
				line=$(grep "^BenchmarkGPUAttention/$shape/$impl" "$WORK/attn-bench.log")
				ms=$(grep -o '[0-9.]* ms/fwd+bwd' <<<"$line" | awk '{print $1}')
				tf=$(grep -o '[0-9.]* TFLOP/s' <<<"$line" | awk '{print $1}')
				record "attention $shape $impl" ok "${ms:-?} ms" "${tf:-?} TFLOP/s, bench-L shapes (B=32), fwd+bwd, bf16"
			done
		done
	else
		fail "attention timing" "" "see log"
	fi
	cat "$WORK/attn-bench.log"
else
	record "GPU correctness" skip "" "no GPU on this machine"
	record "bf16 GEMM" skip "" "no GPU on this machine"
	record "attention fused vs gemm" skip "" "no GPU on this machine"
fi

# bench RUN_NAME BACKEND CONFIG: one fmctl bench step run, recorded.
bench() {
	local name=$1 backend=$2 cfg=$3 out
	out=$WORK/$name.json
	if timeout 150 "$BIN/fmctl" bench step --config "$cfg" --backend "$backend" --format json --steps "$STEPS" --warmup 2 >"$out" 2>"$WORK/$name.err"; then
		local ms gf
		ms=$(json_field median_step_ms <"$out")
		gf=$(json_field gflops <"$out")
		ms=$(printf '%.1f' "$ms")
		local mem note
		mem=$(json_field device_mem_mb <"$out")
		note=$(mfu "$gf")
		[ -n "$mem" ] && [ "$mem" != 0 ] && note="$note, GPU mem $(printf '%.0f' "$mem") MiB"
		echo "$name: median ${ms} ms, ${gf} GFLOP/s, GPU memory ${mem:-?} MiB"
		record "$name" ok "$ms ms" "$note"
		echo "$ms" >"$WORK/$name.ms"
	else
		local rc=$?
		cat "$WORK/$name.err"
		if [ "$rc" = 124 ]; then
			fail "$name" "" "timed out after 150 s"
		else
			fail "$name" "" "$(tail -1 "$WORK/$name.err" | cut -c1-80)"
		fi
	fi
}

# mfu GFLOPS: "X TFLOP/s, MFU Y%" against the measured GEMM rate.
mfu() {
	python3 -c '
import sys
gf = float(sys.argv[1] or 0); peak = sys.argv[2]
s = "%.1f GFLOP/s" % gf if gf < 1000 else "%.1f TFLOP/s" % (gf / 1e3)
if peak:
    s += ", MFU %.1f%%" % (100 * gf / 1e3 / float(peak))
print(s)' "$1" "$GEMM_TFLOPS"
}

TORCH_GPU=0
if [ "$GPUS" -gt 0 ] && python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	TORCH_GPU=1
fi

for cfg in $CONFIGS; do
	section "fmctl bench step $cfg"
	if [ "$cfg" != bench-L ]; then
		bench "$cfg cpu" cpu "$cfg"
	fi
	if [ "$GPUS" -gt 0 ]; then
		bench "$cfg cuda-bf16" cuda "$cfg"
		# The same step on the cuBLAS attention path, for bench-L, only
		# with 100 s of the five-minute budget left.
		if [ "$cfg" = bench-L ] && [ "$SECONDS" -lt 200 ]; then
			FMTRAIN_CUDA_ATTENTION=gemm bench "$cfg cuda-bf16 gemm-attn" cuda "$cfg"
		elif [ "$cfg" = bench-L ]; then
			record "$cfg cuda-bf16 gemm-attn" skip "" "no time left in the budget (${SECONDS}s)"
		fi
		# Activations in float32 instead of bf16 storage: the memory and
		# time that storage saves (bench-L, with the budget to spare).
		if [ "$cfg" = bench-L ] && [ "$SECONDS" -lt 170 ]; then
			FMTRAIN_CUDA_ACTIVATIONS=fp32 bench "$cfg cuda-bf16 fp32-acts" cuda "$cfg"
		elif [ "$cfg" = bench-L ]; then
			record "$cfg cuda-bf16 fp32-acts" skip "" "no time left in the budget (${SECONDS}s)"
		fi
		if [ "$TORCH_GPU" = 1 ]; then
			if timeout 150 python3 scripts/gpu_peer.py --config "$cfg" --precision bf16 --steps "$STEPS" --warmup 2 >"$WORK/peer.json" 2>"$WORK/peer.err"; then
				ms=$(printf '%.1f' "$(json_field median_step_ms <"$WORK/peer.json")")
				gf=$(json_field gflops <"$WORK/peer.json")
				ours=$(cat "$WORK/$cfg cuda-bf16.ms" 2>/dev/null || echo "")
				note=$(mfu "$gf")
				[ -n "$ours" ] && note="$note; fmtrain/torch $(python3 -c 'import sys; print("%.2fx" % (float(sys.argv[1]) / float(sys.argv[2])))' "$ours" "$ms")"
				record "$cfg torch-bf16" ok "$ms ms" "$note"
			else
				cat "$WORK/peer.err"
				record "$cfg torch-bf16" FAIL "" "$(tail -1 "$WORK/peer.err" | cut -c1-80)"
			fi
		else
			record "$cfg torch-bf16" skip "" "no torch with CUDA here"
		fi
	else
		record "$cfg cuda-bf16" skip "" "no GPU on this machine"
	fi
done

section "two-process NCCL all-reduce"
if [ "$GPUS" -ge 2 ] && [ -x "$BIN/nccl.test" ]; then
	if FMTRAIN_REQUIRE_GPU=1 timeout 120 "$BIN/nccl.test" -test.run '^TestNCCLTwoProcess$' -test.v >"$WORK/nccl.log" 2>&1; then
		record "nccl 2 ranks" ok "" "$(grep -o 'all-reduce of [^,]*' "$WORK/nccl.log" | head -1)"
	else
		fail "nccl 2 ranks" "" "see log"
	fi
	cat "$WORK/nccl.log"
else
	record "nccl 2 ranks" skip "" "$GPUS GPU(s): needs two"
fi

section "summary (log: $LOG)"
echo "$(date -u +%FT%TZ), $GPUS GPU(s): $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
column -t -s $'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
if [ "$FAILED" = 0 ]; then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
exit "$FAILED"
