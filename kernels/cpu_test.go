package kernels_test

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
)

// TestConformance runs every op of every registered backend (and the CPU
// backend's pure-Go and odd-worker-count variants) against the reference.
func TestConformance(t *testing.T) {
	for _, name := range kernels.Names() {
		if name == "reference" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			b, err := kernels.Open(name)
			if err != nil {
				t.Skipf("backend %s not available here: %v", name, err)
			}
			if c, ok := b.(kernels.Closer); ok {
				defer c.Close()
			}
			if cpu, ok := b.(*kernels.CPU); ok {
				t.Logf("cpu backend: %d workers, GEMM kernel %s", cpu.Workers(), cpu.GEMMKernel())
			}
			kernelstest.Run(t, b)
		})
	}
	t.Run("cpu-purego-3workers", func(t *testing.T) {
		b := kernels.NewCPU(kernels.CPUOptions{Workers: 3, PureGo: true})
		defer b.Close()
		if b.GEMMKernel() != "go" {
			t.Fatalf("GEMM kernel %q, want go", b.GEMMKernel())
		}
		kernelstest.Run(t, b)
	})
	t.Run("cpu-scalar-math", func(t *testing.T) {
		defer kernels.SetAVX2(kernels.SetAVX2(false))
		b := kernels.NewCPU(kernels.CPUOptions{})
		defer b.Close()
		kernelstest.Run(t, b)
	})
	t.Run("cpu-1worker", func(t *testing.T) {
		b := kernels.NewCPU(kernels.CPUOptions{Workers: 1})
		defer b.Close()
		kernelstest.Run(t, b)
	})
}

// TestOpenBLASLoads checks the fast path is really taken. CI sets
// FMTRAIN_REQUIRE_OPENBLAS=1 (and installs libopenblas0), making a missing
// library a failure; elsewhere the pure-Go path (checked by TestConformance)
// is what runs, and the test says how to get the fast one.
func TestOpenBLASLoads(t *testing.T) {
	b := kernels.NewCPU(kernels.CPUOptions{})
	defer b.Close()
	if strings.HasPrefix(b.GEMMKernel(), "openblas") {
		return
	}
	msg := fmt.Sprintf("GEMM kernel %q: libopenblas.so.0 did not load (apt-get install libopenblas0)", b.GEMMKernel())
	if os.Getenv("FMTRAIN_REQUIRE_OPENBLAS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; set FMTRAIN_REQUIRE_OPENBLAS=1 to make this a failure")
}

func TestRegistry(t *testing.T) {
	_, err := kernels.Open("no-such-backend")
	if err == nil || !strings.Contains(err.Error(), "cpu") || !strings.Contains(err.Error(), "reference") {
		t.Fatalf("Open(unknown) = %v, want an error listing the known backends", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering cpu twice did not panic")
		}
	}()
	kernels.Register("cpu", func() (kernels.Backend, error) { return kernels.Reference{}, nil })
}

// TestCPUOpsDoNotAllocate drives every op once to size the scratch, then
// checks that repeating them allocates nothing.
func TestCPUOpsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items); covered by the plain go test run")
	}
	b := kernels.NewCPU(kernels.CPUOptions{Workers: 2})
	defer b.Close()
	const B, N, S, D, H = 2, 64, 8, 64, 4
	buf := func(n int) []float32 { return make([]float32, n) }
	x, y, w, bias := buf(B*N*D), buf(B*N*D), buf(3*D*D), buf(3*D)
	qkv, dqkv, out, lse := buf(B*N*3*D), buf(B*N*3*D), buf(B*N*D), buf(B*H*N)
	kv, mask, mod := buf(B*S*2*D), buf(B*S), buf(B*6*D)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	mask[0] = 1
	self := kernels.AttentionDims{B: B, Heads: H, Nq: N, Nk: N, HeadDim: D / H, QRow: 3 * D, KRow: 3 * D, VRow: 3 * D, ORow: D, Scale: 0.25}
	cross := kernels.AttentionDims{B: B, Heads: H, Nq: N, Nk: S, HeadDim: D / H, QRow: D, KRow: 2 * D, VRow: 2 * D, ORow: D, Scale: 0.25}
	pd := kernels.PatchDims{B: B, C: 4, F: 1, H: 16, W: 16, P: 2, PT: 1}
	lat := buf(B * 4 * 16 * 16)
	step := func() {
		b.LinearForward(qkv, x, w, bias, B*N, D, 3*D)
		b.LinearBackward(y, w, bias, qkv, x, w, B*N, D, 3*D)
		b.LayerNormForward(y, lse[:B*N], lse[B*N:2*B*N], x, B*N, D)
		b.LayerNormBackward(y, x, x, lse[B*N:2*B*N], B*N, D)
		b.ModulateForward(y, x, mod, mod[D:], B, N, D, 6*D)
		b.ModulateBackward(y, mod, mod[D:], x, x, mod[D:], B, N, D, 6*D)
		b.GatedResidualForward(y, x, mod, B, N, D, 6*D)
		b.GatedResidualBackward(y, mod, x, x, mod, B, N, D, 6*D)
		b.GELUForward(y, x, len(x))
		b.GELUBackward(y, x, x, len(x))
		b.SiLUForward(y, x, len(x))
		b.SiLUBackward(y, x, x, len(x))
		b.ResidualForward(y, y, x, len(x))
		b.ResidualBackward(y, nil, x, len(x))
		b.AttentionForward(out, lse, qkv, qkv[D:], qkv[2*D:], nil, self)
		b.AttentionBackward(dqkv, dqkv[D:], dqkv[2*D:], out, qkv, qkv[D:], qkv[2*D:], nil, out, lse, self)
		b.AttentionForward(out, lse, x, kv, kv[D:], mask, cross)
		b.AttentionBackward(y, kv, kv[D:], out, x, kv, kv[D:], mask, out, lse, cross)
		b.PatchifyForward(x, lat, pd)
		b.PatchifyBackward(lat, x, pd)
		b.UnpatchifyForward(lat, x, pd)
		b.UnpatchifyBackward(x, lat, pd)
		_ = b.MSEForward(x, y, len(x))
		b.MSEBackward(y, x, y, len(x), 1)
		b.GemmBatched(false, true, 8, 8, 8, 1, x, 8, 64, y, 8, 64, 0, out, 8, 64, 4)
	}
	step()
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("steady-state ops allocate %.1f times per run, want 0", a)
	}
}

// TestFastMath bounds the float32 exp and GELU used by softmax and the MLP.
func TestFastMath(t *testing.T) {
	var worstExp, worstGELU, worstGrad float64
	for x := -87.0; x < 88; x += 0.0137 {
		got := float64(kernels.Exp32(float32(x)))
		want := math.Exp(float64(float32(x)))
		worstExp = math.Max(worstExp, math.Abs(got-want)/want)
	}
	for x := -12.0; x < 12; x += 0.00391 {
		v := float64(float32(x))
		u := math.Sqrt(2/math.Pi) * (v + 0.044715*v*v*v)
		th := math.Tanh(u)
		gelu := 0.5 * v * (1 + th)
		grad := 0.5*(1+th) + 0.5*v*(1-th*th)*math.Sqrt(2/math.Pi)*(1+3*0.044715*v*v)
		worstGELU = math.Max(worstGELU, math.Abs(float64(kernels.GELU32(float32(x)))-gelu)/math.Max(math.Abs(gelu), 1e-6))
		worstGrad = math.Max(worstGrad, math.Abs(float64(kernels.GELUGrad32(float32(x)))-grad)/math.Max(math.Abs(grad), 1e-2))
	}
	if worstExp > 4e-7 || worstGELU > 5e-6 || worstGrad > 1e-5 {
		t.Fatalf("worst relative error: exp32 %.3g (≤ 4e-7), GELU %.3g (≤ 5e-6), GELU' %.3g (≤ 1e-5)", worstExp, worstGELU, worstGrad)
	}
	if kernels.Exp32(float32(math.Inf(-1))) != 0 || !math.IsInf(float64(kernels.Exp32(100)), 1) {
		t.Fatal("exp32 limits wrong")
	}
}

func TestSinusoids(t *testing.T) {
	temb := make([]float32, 2*256)
	kernels.TimestepEmbedding(temb, []float32{0, 1000}, 256)
	if temb[0] != 1 || temb[128] != 0 || temb[256+128] != float32(math.Sin(1000)) || temb[256] != float32(math.Cos(1000)) {
		t.Fatalf("timestep embedding: %v %v %v %v", temb[0], temb[128], temb[256], temb[256+128])
	}
	pos := make([]float32, 2*3*16)
	kernels.PositionTable(pos, 1, 2, 3, 16)
	// token 5 = (hi=1, wi=2): f block [sin 0 ×2, cos 0 ×2], h block starts sin(1), w block starts sin(2)
	row := pos[5*16:]
	if row[0] != 0 || row[2] != 1 || row[4] != float32(math.Sin(1)) || row[10] != float32(math.Sin(2)) {
		t.Fatalf("position row 5 = %v", row[:16])
	}
}
