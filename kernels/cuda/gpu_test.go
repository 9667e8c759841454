package cuda

// Tests and benchmarks that need a GPU. Without one they skip, saying so;
// scripts/gpu-check.sh runs them with FMTRAIN_REQUIRE_GPU=1, which turns
// every skip into a failure.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/internal/shareddata"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/optim"
	"github.com/fmtrain/fmtrain/safetensors"
)

// openOrSkip opens the backend on GPU 0 or skips when this host has none.
func openOrSkip(tb testing.TB, bf16 bool) *Backend {
	tb.Helper()
	b, err := Open(Options{BF16: bf16, CacheDir: tb.TempDir()})
	if err == nil {
		tb.Cleanup(func() {
			if err := b.Close(); err != nil {
				tb.Error(err)
			}
		})
		return b
	}
	var ce *cu.Error
	noGPU := errors.Is(err, cu.ErrLibraryNotFound) || errors.As(err, &ce) && ce.Call == "cuInit"
	if noGPU && os.Getenv("FMTRAIN_REQUIRE_GPU") != "1" {
		tb.Skipf("no usable GPU here (scripts/gpu-check.sh runs this on a GPU host): %v", err)
	}
	tb.Fatal(err)
	return nil
}

// TestGPUConformance runs kernels' conformance suite (every op against
// kernels.Reference, relative error ≤ 2e-5) on the strict fp32 path.
func TestGPUConformance(t *testing.T) {
	b := openOrSkip(t, false)
	kernelstest.Run(t, b)
	// The same with ordinary Go slices for every argument: the staging path.
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

// vectorTolerances are the per-tensor relative tolerances of the reference
// vectors: fp32 1e-4 everywhere; bf16 2e-2 for the output and the loss and
// 5e-2 for gradients. bf16 gradients land at 1–4 % on these small models in
// the emulator (the error comes from the bf16 forward: with every backward
// GEMM in fp32 it stays at 3 %), so 2e-2 cannot hold for them.
var vectorTolerances = []struct {
	name         string
	bf16         bool
	tol, gradTol float64
}{{"fp32", false, 1e-4, 1e-4}, {"bf16", true, 2e-2, 5e-2}}

// TestGPUReferenceVectors runs shared/testdata/fm-dit through forward, MSE
// and backward on the GPU at vectorTolerances.
func TestGPUReferenceVectors(t *testing.T) {
	dir, err := shareddata.Path("testdata", "fm-dit")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatalf("no reference vectors in %s", dir)
	}
	for _, prec := range vectorTolerances {
		t.Run(prec.name, func(t *testing.T) {
			b := openOrSkip(t, prec.bf16)
			for _, path := range files {
				worst, name := runVector(t, b, path, prec.tol, prec.gradTol)
				t.Logf("GPU %s %s: worst relative error %.3g (%s), tolerance %g", prec.name, filepath.Base(path), worst, name, prec.tol)
			}
		})
	}
}

// runVector checks one reference file and returns the worst error.
// gradTol is the tolerance for gradients (tol applies to out and loss).
func runVector(t *testing.T, b *Backend, path string, tol, gradTol float64) (float64, string) {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.ConfigFromMetadata(f.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	var sh struct{ B, F, H, W, S int }
	if err := json.Unmarshal([]byte(f.Metadata["shapes"]), &sh); err != nil {
		t.Fatal(err)
	}
	get := func(name string) []float32 {
		v, _, err := f.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	m, err := model.New(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := model.ReadParams(f, cfg, m.Params()); err != nil {
		t.Fatal(err)
	}
	in := model.Input{X: get("x"), B: sh.B, F: sh.F, H: sh.H, W: sh.W, T: get("t"), Txt: get("txt"), S: sh.S, Mask: get("mask")}
	worst, worstName := 0.0, ""
	compare := func(name string, got []float32) {
		tol := tol
		if strings.HasPrefix(name, "grad.") {
			tol = gradTol
		}
		want := get(name)
		if len(got) != len(want) {
			t.Errorf("%s: %s: %d values, want %d", filepath.Base(path), name, len(got), len(want))
			return
		}
		e := kernelstest.RelErr(got, want)
		if e > worst || math.IsNaN(e) {
			worst, worstName = e, name
		}
		if !(e <= tol) {
			t.Errorf("%s: %-40s relative error %.3g > %g", filepath.Base(path), name, e, tol)
		} else if testing.Verbose() {
			t.Logf("%s: %-40s relative error %.3g", filepath.Base(path), name, e)
		}
	}
	out, err := m.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	compare("out", out)
	target := get("target")
	loss := b.MSEForward(out, target, len(out))
	compare("loss", []float32{float32(loss)})
	dOut := make([]float32, len(out))
	b.MSEBackward(dOut, out, target, len(out), 1)
	m.ZeroGrad()
	if err := m.Backward(context.Background(), dOut); err != nil {
		t.Fatal(err)
	}
	for _, p := range model.ParamTable(cfg) {
		compare("grad."+p.Name, m.Grads()[p.Offset:p.Offset+p.Size])
	}
	dx, dtxt := m.InputGrads()
	compare("grad.x", dx)
	compare("grad.txt", dtxt)
	return worst, worstName
}

// TestGPUAdamWMatchesOptim: the fused kernel against optim.AdamW (the CPU
// optimizer, bit-compatible with PyTorch), a few ULPs apart at most.
func TestGPUAdamWMatchesOptim(t *testing.T) {
	b := openOrSkip(t, false)
	const n = 1 << 20
	r := rand.New(rand.NewPCG(3, 4))
	p, g := b.Alloc(n), b.Alloc(n)
	m, v := b.Alloc(n), b.Alloc(n)
	hostP := make([]float32, n)
	for i := range p {
		p[i] = float32(r.NormFloat64())
		hostP[i] = p[i]
	}
	ref := optim.NewAdamW(n, 0.9, 0.999, 1e-8, 0.01)
	for step := int64(1); step <= 3; step++ {
		for i := range g {
			g[i] = float32(r.NormFloat64() * 0.1)
		}
		if err := b.AdamW(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, step); err != nil {
			t.Fatal(err)
		}
		if err := ref.Update(hostP, g, 1e-3); err != nil {
			t.Fatal(err)
		}
		if err := b.Synchronize(); err != nil {
			t.Fatal(err)
		}
	}
	var worst int64
	for i := range p {
		d := int64(math.Float32bits(p[i])) - int64(math.Float32bits(hostP[i]))
		worst = max(worst, d, -d)
	}
	if worst > 2 {
		t.Errorf("fused AdamW differs from optim.AdamW by up to %d ULPs", worst)
	}
	t.Logf("fused AdamW vs optim.AdamW after 3 steps: at most %d ULPs apart", worst)
}

func TestGPUZeroScaleSumSquares(t *testing.T) {
	b := openOrSkip(t, false)
	x := b.Alloc(3000)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	b.Scale(x, 2)
	want := 0.0
	for i := range x {
		v := 2 * (float64(i%7) - 3)
		want += v * v
	}
	if got := b.SumSquares(x); math.Abs(got-want) > 1e-9*want {
		t.Errorf("SumSquares = %v, want %v", got, want)
	}
	b.Zero(x)
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
	for i, v := range x {
		if v != 0 {
			t.Fatalf("Zero left x[%d] = %v", i, v)
		}
	}
}

// BenchmarkGPUGemmBF16 measures the device's bf16 GEMM rate (8192³, fp32
// accumulation, random operands) through cuBLAS directly: the denominator
// of MFU in scripts/gpu-check.sh.
func BenchmarkGPUGemmBF16(bm *testing.B) {
	b := openOrSkip(bm, true)
	g := b.dev.(*gpu)
	const n = 8192
	unbind, err := g.bind()
	if err != nil {
		bm.Fatal(err)
	}
	defer unbind()
	host := make([]float32, n*n)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range host {
		host[i] = float32(r.NormFloat64())
	}
	f32, err := g.alloc(n * n * 4)
	if err != nil {
		bm.Fatal(err)
	}
	defer g.free(f32)
	if err := g.copyHtoD(f32, unsafe.Pointer(&host[0]), n*n*4); err != nil {
		bm.Fatal(err)
	}
	var ops [3]cu.DevicePtr // A, B (bf16), C (fp32)
	for i := range ops {
		if ops[i], err = g.alloc(n * n * 4); err != nil {
			bm.Fatal(err)
		}
		defer g.free(ops[i])
	}
	for _, p := range ops[:2] {
		if err := g.launch("cast_bf16", elementwiseCfg(n*n, g.devInfo.Multiprocessors), p, f32, int64(n*n)); err != nil {
			bm.Fatal(err)
		}
	}
	op := cu.GemmOp{M: n, N: n, K: n, Alpha: 1, A: ops[0], B: ops[1], C: ops[2], Lda: n, Ldb: n, Ldc: n, AB: cu.R16BF}
	for range 3 { // warm-up: cuBLAS heuristics, clocks
		if err := g.gemm(op); err != nil {
			bm.Fatal(err)
		}
	}
	if err := g.sync(); err != nil {
		bm.Fatal(err)
	}
	bm.ResetTimer()
	for range bm.N {
		if err := g.gemm(op); err != nil {
			bm.Fatal(err)
		}
	}
	if err := g.sync(); err != nil {
		bm.Fatal(err)
	}
	bm.StopTimer()
	bm.ReportMetric(2*float64(n)*n*n*float64(bm.N)/bm.Elapsed().Seconds()/1e12, "TFLOP/s")
}
