package cuda

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestGPUCheckScript keeps scripts/gpu-check.sh (run on GPU machines only)
// syntactically valid, shellcheck-clean, and doing what the issue asks.
func TestGPUCheckScript(t *testing.T) {
	const path = "../../scripts/gpu-check.sh"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, path, "../../scripts/cuda-headers-check.sh", "../../scripts/cuda-libs-check.sh").CombinedOutput(); err != nil {
			t.Errorf("shellcheck: %v\n%s", err, out)
		}
	} else {
		t.Log("shellcheck not installed; bash -n only")
	}
	for _, want := range []string{
		"ReferenceVectors|", "1e-4", "2e-2", // reference vectors, both tolerances
		"BenchmarkGPUGemmBF16", "MFU", // measured GEMM rate and MFU
		"bench-S bench-V bench-L", "bench step", // the three configs through fmctl
		"TestNCCLTwoProcess", `"$GPUS" -ge 2`, // NCCL only with two GPUs
		"${OUT:-", "gpu-check.log", // full log under $OUT
		"summary", // the table last
	} {
		if !strings.Contains(string(src), want) {
			t.Errorf("gpu-check.sh does not contain %q", want)
		}
	}
	for _, f := range []string{"../../scripts/gpu_peer.py", "../../bench/peers/pytorch_fmdit_step.py"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("gpu-check.sh needs %s: %v", f, err)
		}
	}
}
