package cuda

import (
	"errors"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/kernels"
)

// benchConfig is one row of shared/bench/configs.md.
type benchConfig struct {
	name                             string
	cin, p, pt, D, L, heads, mlp, dt int
	S, F, H, W, B                    int
}

func (c benchConfig) tokens() int { return (c.F / c.pt) * (c.H / c.p) * (c.W / c.p) }

var benchConfigs = []benchConfig{
	{name: "bench-T", cin: 4, p: 2, pt: 1, D: 128, L: 4, heads: 4, mlp: 4, dt: 64, S: 8, F: 1, H: 16, W: 16, B: 16},
	{name: "bench-S", cin: 4, p: 2, pt: 1, D: 384, L: 12, heads: 6, mlp: 4, dt: 512, S: 32, F: 1, H: 32, W: 32, B: 8},
	{name: "bench-V", cin: 16, p: 2, pt: 1, D: 256, L: 6, heads: 4, mlp: 4, dt: 256, S: 16, F: 5, H: 16, W: 16, B: 2},
	{name: "bench-L", cin: 16, p: 2, pt: 1, D: 1152, L: 28, heads: 16, mlp: 4, dt: 4096, S: 128, F: 1, H: 64, W: 64, B: 32},
}

func TestBenchTokens(t *testing.T) {
	want := map[string]int{"bench-T": 64, "bench-S": 256, "bench-V": 320, "bench-L": 1024}
	for _, c := range benchConfigs {
		if c.tokens() != want[c.name] {
			t.Errorf("%s: %d tokens, configs.md says %d", c.name, c.tokens(), want[c.name])
		}
	}
}

// TestLaunchShapesForBenchConfigs checks, at each bench config's full batch,
// every launch shape the backend computes: within the hardware limits, and
// covering the work exactly (every row/column/element reached once).
func TestLaunchShapesForBenchConfigs(t *testing.T) {
	const sms = 132
	for _, c := range benchConfigs {
		N, D, M := c.tokens(), c.D, c.mlp*c.D
		rows := c.B * N
		for _, n := range []int64{int64(rows) * int64(M), int64(rows) * int64(3*D), int64(c.B*c.heads) * int64(N) * int64(N), int64(c.B * c.cin * c.F * c.H * c.W)} {
			cfg := elementwiseCfg(n, sms)
			if err := cfg.validate("elementwise"); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if int64(cfg.grid.X)*elemBlock < n && cfg.grid.X != sms*32 {
				t.Errorf("%s: elementwise grid %d for %d elements neither covers them nor fills the GPU", c.name, cfg.grid.X, n)
			}
		}
		for _, r := range []int{rows, c.B * c.heads * N, c.B * c.S} {
			cfg := warpPerRowCfg(r)
			if err := cfg.validate("warp-per-row"); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if cfg.grid.X*cfg.block.X/32 < r || (cfg.grid.X-1)*cfg.block.X/32 >= r {
				t.Errorf("%s: %d rows got grid %d of %d threads", c.name, r, cfg.grid.X, cfg.block.X)
			}
		}
		for _, cs := range []struct{ R, C, Z int }{{rows, D, 1}, {rows, 3 * D, 1}, {rows, M, 1}, {N, D, c.B}, {c.B * c.S, D, 1}} {
			p := colsumCfg(cs.R, cs.C, cs.Z)
			if err := p.partial.validate("colsum_partial"); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if p.partial.grid.X*32 < cs.C || (p.partial.grid.X-1)*32 >= cs.C {
				t.Errorf("%s: colsum %v: grid.x %d", c.name, cs, p.partial.grid.X)
			}
			if p.chunks*p.rowsPerChunk < cs.R || (p.chunks-1)*p.rowsPerChunk >= cs.R || p.partial.grid.Y != p.chunks || p.partial.grid.Z != cs.Z {
				t.Errorf("%s: colsum %v: %d chunks of %d rows", c.name, cs, p.chunks, p.rowsPerChunk)
			}
			if p.rowsPerChunk > 128 || p.partialFloats != cs.Z*p.chunks*cs.C {
				t.Errorf("%s: colsum %v: %d rows per chunk, %d partials", c.name, cs, p.rowsPerChunk, p.partialFloats)
			}
			// colsum_partial's shared array is [8][33] floats: block.y must stay 8.
			if p.partial.block != (cu.Dim3{X: 32, Y: 8, Z: 1}) {
				t.Errorf("colsum block %v does not match the kernel's shared array", p.partial.block)
			}
		}
		n := int64(rows) * int64(c.p*c.p*c.pt*c.cin)
		if cfg := mseCfg(n); cfg.grid.X > msePartialBlocks || cfg.block.X != 256 {
			t.Errorf("%s: mse %v (mse_partial's shared array holds 256)", c.name, cfg)
		}
		// Fused attention: every tile of every (sample, head) covered, once,
		// within the H200's shared memory (fakeDevice's).
		hdp := flashHeadDim(c.D / c.heads)
		if hdp == 0 {
			t.Errorf("%s: head dim %d has no fused kernel", c.name, c.D/c.heads)
		}
		for _, nk := range []int{N, c.S} {
			d := kernels.AttentionDims{B: c.B, Heads: c.heads, Nq: N, Nk: nk}
			for _, kind := range flashKinds {
				cfg := flashCfg(kind, d, hdp)
				cfg.optIn = 227 << 10
				if err := cfg.validate(kind.kernel(hdp)); err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
				n, tile := N, flashBR
				switch kind {
				case flashDKDV:
					n, tile = nk, flashBCBwd
				case flashDKDVTC:
					n = nk
				}
				if per := cfg.grid.X / (c.B * c.heads); cfg.grid.X%(c.B*c.heads) != 0 || per*tile < n || (per-1)*tile >= n || cfg.block.X != flashThreads {
					t.Errorf("%s: %s grid %v block %v for %d rows", c.name, kind.kernel(hdp), cfg.grid, cfg.block, n)
				}
			}
		}
		// Attention score blocks: a chunk of samples within the budget.
		for _, bytesPerScore := range []int{4 + 2, 4 + 4 + 2 + 2} {
			for _, nk := range []int{N, c.S} {
				d := kernels.AttentionDims{B: c.B, Heads: c.heads, Nq: N, Nk: nk}
				chunk := attnChunk(d, bytesPerScore)
				if chunk < 1 || chunk > c.B || int64(chunk)*int64(c.heads*N*nk*bytesPerScore) > attnScratchBudget {
					t.Errorf("%s: attention chunk %d of %d samples for Nk=%d", c.name, chunk, c.B, nk)
				}
			}
		}
	}
	if err := (launchCfg{grid: cu.Dim3{X: 1, Y: 70000, Z: 1}, block: cu.Dim3{X: 1, Y: 1, Z: 1}}).validate("k"); err == nil {
		t.Error("grid.y 70000 accepted")
	}
	if err := (launchCfg{grid: cu.Dim3{X: 1, Y: 1, Z: 1}, block: cu.Dim3{X: 64, Y: 32, Z: 1}}).validate("k"); err == nil {
		t.Error("2048-thread block accepted")
	}
}

// newFakeBackend returns a backend over a fake device.
func newFakeBackend(t *testing.T, bf16 bool) (*Backend, *fakeDevice) {
	t.Helper()
	f := newFakeDevice(t)
	b, err := newBackend(f, bf16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return b, f
}

// runAllOps calls every Backend op once with c's shapes (batch B), taking
// buffers from alloc, and activations (the model's saved tensors) from act.
func runAllOps(b *Backend, c benchConfig, B int, alloc, act func(int) []float32) {
	N, D, M, S := c.tokens(), c.D, c.mlp*c.D, c.S
	rows := B * N
	hd := D / c.heads
	x, dx := alloc(B*c.cin*c.F*c.H*c.W), alloc(B*c.cin*c.F*c.H*c.W)
	pd := kernels.PatchDims{B: B, C: c.cin, F: c.F, H: c.H, W: c.W, P: c.p, PT: c.pt}
	K := pd.PatchLen()
	patches, dpatches := alloc(rows*K), alloc(rows*K)
	b.PatchifyForward(patches, x, pd)
	b.PatchifyBackward(dx, dpatches, pd)
	b.UnpatchifyForward(x, patches, pd)
	b.UnpatchifyBackward(dpatches, dx, pd)

	h, dh, a, da := alloc(rows*D), alloc(rows*D), act(rows*D), alloc(rows*D)
	mean, rstd := alloc(rows), alloc(rows)
	b.LayerNormForward(a, mean, rstd, h, rows, D)
	b.LayerNormBackward(dh, da, a, rstd, rows, D)
	mod, dmod := alloc(B*6*D), alloc(B*6*D)
	b.ModulateForward(a, a, mod[0:], mod[D:], B, N, D, 6*D)
	b.ModulateBackward(da, dmod[0:], dmod[D:], da, a, mod[D:], B, N, D, 6*D)
	b.GatedResidualForward(h, a, mod[2*D:], B, N, D, 6*D)
	b.GatedResidualBackward(da, dmod[2*D:], dh, a, mod[2*D:], B, N, D, 6*D)
	b.ResidualForward(h, h, a, rows*D)
	b.ResidualBackward(dh, da, dh, rows*D)
	b.ResidualBackward(nil, da, dh, rows*D)

	w, dw, bias, dbias := alloc(3*D*D), alloc(3*D*D), alloc(3*D), alloc(3*D)
	qkv, dqkv := act(rows*3*D), alloc(rows*3*D)
	b.LinearForward(qkv, a, w, bias, rows, D, 3*D)
	b.LinearForward(qkv, a, w, nil, rows, D, 3*D)
	b.LinearBackward(da, dw, dbias, dqkv, a, w, rows, D, 3*D)
	b.LinearBackward(nil, dw, nil, dqkv, a, w, rows, D, 3*D)

	out, dout, lse := act(rows*D), alloc(rows*D), alloc(B*c.heads*N)
	self := kernels.AttentionDims{B: B, Heads: c.heads, Nq: N, Nk: N, HeadDim: hd, QRow: 3 * D, KRow: 3 * D, VRow: 3 * D, ORow: D, Scale: float32(1 / math.Sqrt(float64(hd)))}
	q, dq, kv, dkv, mask := act(rows*D), alloc(rows*D), act(B*S*2*D), alloc(B*S*2*D), alloc(B*S)
	cross := kernels.AttentionDims{B: B, Heads: c.heads, Nq: N, Nk: S, HeadDim: hd, QRow: D, KRow: 2 * D, VRow: 2 * D, ORow: D, Scale: self.Scale}
	// The config's attention on both implementations, then the fused
	// kernels at every padded head dim (one head of that width).
	mode := b.attention
	for _, m := range []attnMode{attnFused, attnGEMM} {
		b.attention = m
		b.AttentionForward(out, lse, qkv[0:], qkv[D:], qkv[2*D:], nil, self)
		b.AttentionBackward(dqkv[0:], dqkv[D:], dqkv[2*D:], dout, qkv[0:], qkv[D:], qkv[2*D:], nil, out, lse, self)
		b.AttentionForward(out, lse, q, kv[0:], kv[D:], mask, cross)
		b.AttentionBackward(dq, dkv[0:], dkv[D:], dout, q, kv[0:], kv[D:], mask, out, lse, cross)
	}
	b.attention = mode
	for _, w := range flashHeadDims {
		if w > D {
			continue // D ≥ 128 in every bench config
		}
		one := kernels.AttentionDims{B: B, Heads: 1, Nq: N, Nk: S, HeadDim: w, QRow: D, KRow: 2 * D, VRow: 2 * D, ORow: D, Scale: self.Scale}
		b.AttentionForward(out, lse, q, kv[0:], kv[D:], mask, one)
		b.AttentionBackward(dq, dkv[0:], dkv[D:], dout, q, kv[0:], kv[D:], mask, out, lse, one)
	}

	u, du := act(rows*M), alloc(rows*M)
	b.GELUForward(u, u, rows*M)
	b.GELUBackward(du, du, u, rows*M)
	b.SiLUForward(mod, mod, B*6*D)
	b.SiLUBackward(dmod, dmod, mod, B*6*D)

	// The GEMMs and the loss take float32 only.
	a, qkv, u, out = alloc(rows*D), alloc(rows*3*D), alloc(rows*M), alloc(rows*D)
	b.Gemm(false, true, rows, 3*D, D, 1, a, D, w, D, 0, qkv, 3*D)
	b.Gemm(true, false, D, D, rows, 1, a, D, h, D, 1, dw, D)
	b.Gemm(false, false, 5, 4, 0, 1, nil, 1, nil, 4, 0.5, qkv, 4)
	b.GemmBatched(false, true, N, N, hd, 1, qkv, 3*D, hd, qkv[D:], 3*D, hd, 0, u, N, N*N, min(c.heads, M/N))

	b.MSEForward(out, dout, rows*D)
	b.MSEBackward(dout, out, dh, rows*D, 0.5)
	p, g, m, v := alloc(3*D*D), alloc(3*D*D), alloc(3*D*D), alloc(3*D*D)
	if err := b.AdamW(p, g, m, v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 1); err != nil {
		panic(err)
	}
	if err := b.EMAUpdate(m, p, 0.999, 0.001); err != nil {
		panic(err)
	}
	b.Zero(g)
	b.Scale(g, 0.5)
	b.SumSquares(g)
}

// TestEveryOpOnFakeDevice runs every op at the bench shapes through the
// real backend code on the fake device: each launch's kernel must exist
// with matching argument kinds and a valid shape, every pointer and GEMM
// extent must stay inside its allocation, and together the ops must use
// every kernel of the program. On the mixed-precision backend the
// activations come from managed memory, host memory, or bf16 storage.
func TestEveryOpOnFakeDevice(t *testing.T) {
	for _, c := range benchConfigs {
		for _, bf16 := range []bool{false, true} {
			for _, mem := range []string{"managed", "host", "store"} {
				B := 2
				if c.name == "bench-L" {
					B = 1
				}
				name := c.name
				if bf16 {
					name += "/bf16"
				}
				switch {
				case mem == "store" && !bf16:
					continue // bf16 storage is the mixed-precision backend's
				case mem == "host" && c.name == "bench-L":
					continue // staging logic is shape-independent; spare the memory
				case mem != "managed":
					name += "/" + mem
				}
				managedMem := mem != "host"
				t.Run(name, func(t *testing.T) {
					b, f := newFakeBackend(t, bf16)
					alloc := b.Alloc
					if !managedMem {
						alloc = func(n int) []float32 { return make([]float32, n) }
					}
					act := alloc
					if mem == "store" {
						act = func(n int) []float32 {
							s, err := b.AllocActivations(n)
							if err != nil {
								t.Fatal(err)
							}
							return s
						}
					}
					runAllOps(b, c, B, alloc, act)
					if err := b.Synchronize(); err != nil {
						t.Fatal(err)
					}
					// fp32 never rounds to bf16; bf16 adds biases in cuBLASLt's
					// epilogue; only a bias-less linear layer into bf16 storage
					// (its GEMM into scratch) uses bias_store. The fused
					// attention kernels are the FMA ones in fp32, the tensor-core
					// ones in bf16 (TestEmulatedFlashAttention runs the FMA ones
					// in bf16 too).
					skip := map[bool][]string{false: {"cast_bf16", "bias_store"}, true: {"bias_add", "bias_store"}}[bf16]
					if mem == "store" {
						skip = skip[:1]
					}
					for _, k := range flashKinds {
						if k.tensorCores() != bf16 {
							for _, hdp := range flashHeadDims {
								skip = append(skip, k.kernel(hdp))
							}
						}
					}
					var all []string
					for k := range b.sigs {
						if !slices.Contains(skip, k) {
							all = append(all, k)
						}
					}
					sort.Strings(all)
					if got := f.kernelsLaunched(); strings.Join(got, " ") != strings.Join(all, " ") {
						t.Errorf("ops launched kernels\n%v\nwant (the program's, less %v)\n%v", got, skip, all)
					}
					// Besides the attention GEMMs' pointer arrays, only the MSE and
					// SumSquares results cross with managed buffers.
					if managedMem && f.copies-f.pointerGemms != 2 {
						t.Errorf("%d copies (%d pointer arrays) with managed buffers, want only the MSE and SumSquares results besides", f.copies, f.pointerGemms)
					}
					if !managedMem && f.copies < 40 {
						t.Errorf("only %d copies with host buffers: staging skipped?", f.copies)
					}
					var bf16Gemms int
					for _, g := range f.gemms {
						if g.AB == cu.R16BF {
							bf16Gemms++
						}
					}
					if bf16 != (bf16Gemms == len(f.gemms)) || (!bf16 && bf16Gemms != 0) {
						t.Errorf("bf16=%v but %d of %d GEMMs had bf16 operands", bf16, bf16Gemms, len(f.gemms))
					}
					if err := b.Close(); err != nil {
						t.Fatal(err)
					}
					if len(f.blocks) != 0 || len(f.managed) != 0 || len(b.handles) != 0 {
						t.Errorf("Close leaked %d device blocks, %d managed allocations and %d handles", len(f.blocks), len(f.managed), len(b.handles))
					}
				})
			}
		}
	}
}

// TestStickyError: a failing launch stops later ops and Synchronize reports it.
func TestStickyError(t *testing.T) {
	b, f := newFakeBackend(t, false)
	x := b.Alloc(100)
	b.GELUForward(x, x, 100)
	before := len(f.launches)
	b.fail(errors.New("boom"))
	b.GELUForward(x, x, 100)
	if len(f.launches) != before {
		t.Error("op ran after an error")
	}
	if err := b.Synchronize(); err == nil || err.Error() != "boom" {
		t.Errorf("Synchronize = %v", err)
	}
	if v := b.MSEForward(x, x, 100); !math.IsNaN(v) {
		t.Errorf("MSEForward after error = %v, want NaN", v)
	}
	if err := b.AdamW(x, x, x, x, 1e-3, 0.9, 0.999, 1e-8, 0, 1); err == nil {
		t.Error("AdamW after error returned nil")
	}
}

func TestLaunchArgumentChecks(t *testing.T) {
	b, _ := newFakeBackend(t, false)
	o := b.begin("test")
	o.start()
	o.launch("gelu_forward", elementwiseCfg(10, 1), cu.DevicePtr(0), cu.DevicePtr(0), int32(10), int32(0)) // n is long long
	o.end()
	if b.err == nil || !strings.Contains(b.err.Error(), "argument 2 is int32, the kernel takes long long") {
		t.Errorf("wrong argument kind: %v", b.err)
	}
	b, _ = newFakeBackend(t, false)
	o = b.begin("test")
	o.start()
	o.launch("no_such_kernel", elementwiseCfg(10, 1))
	o.end()
	if b.err == nil || !strings.Contains(b.err.Error(), "no kernel no_such_kernel") {
		t.Errorf("unknown kernel: %v", b.err)
	}
}

func TestAllocFallsBackWhenDeviceIsFull(t *testing.T) {
	b, f := newFakeBackend(t, false)
	f.freeMem = managedReserve + 1<<20
	s := b.Alloc(1 << 18) // 1 MiB: fits beside the reserve
	if !b.mm.contains(sliceRange(s, len(s))) {
		t.Error("1 MiB allocation should be managed")
	}
	s2 := b.Alloc(1<<18 + 1) // would eat into the reserve
	if b.mm.contains(sliceRange(s2, len(s2))) || len(s2) != 1<<18+1 {
		t.Error("allocation beyond free memory should fall back to host memory")
	}
	if b.err != nil {
		t.Errorf("fallback is not an error: %v", b.err)
	}
}

// TestOpenWithoutDriver: on this host (no GPU in CI) opening the backend
// fails with a clear error naming the missing driver library; on a GPU host
// it opens.
func TestOpenWithoutDriver(t *testing.T) {
	be, err := kernels.Open("cuda")
	if err == nil {
		be.(kernels.Closer).Close()
		t.Log("a CUDA driver is present: backend opened")
		return
	}
	if errors.Is(err, cu.ErrLibraryNotFound) {
		if !strings.Contains(err.Error(), "libcuda.so.1") || !strings.Contains(err.Error(), "CUDA is not usable on this host") {
			t.Errorf("error %q should say CUDA is unusable and name libcuda.so.1", err)
		}
		return
	}
	var ce *cu.Error
	if !errors.As(err, &ce) {
		t.Errorf("unexpected error: %v", err)
	}
}

// TestLinearFallsBackWithoutLtAlgo: when cuBLASLt offers no algorithm the
// bf16 linear layer runs as GEMM + bias_add.
func TestLinearFallsBackWithoutLtAlgo(t *testing.T) {
	b, f := newFakeBackend(t, true)
	f.noLtAlgo = true
	out, in, w, bias := b.Alloc(6*5), b.Alloc(6*7), b.Alloc(5*7), b.Alloc(5)
	b.LinearForward(out, in, w, bias, 6, 7, 5)
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
	if got := f.kernelsLaunched(); strings.Join(got, " ") != "bias_add cast_bf16" || len(f.gemms) != 1 || f.gemms[0].AB != cu.R16BF {
		t.Errorf("kernels %v, gemms %+v", got, f.gemms)
	}
}

// TestAsyncSkipsPerOpSync: by default every op waits for the GPU (host code
// may touch buffers between ops); Async leaves that to Synchronize.
func TestAsyncSkipsPerOpSync(t *testing.T) {
	for _, async := range []bool{false, true} {
		b, f := newFakeBackend(t, false)
		b.async = async
		x := b.Alloc(1000)
		for range 10 {
			b.GELUForward(x, x, 1000)
		}
		if async && f.syncs != 0 || !async && f.syncs != 10 {
			t.Errorf("async=%v: %d syncs for 10 ops", async, f.syncs)
		}
		b.Synchronize()
		if async && f.syncs != 1 {
			t.Errorf("async: Synchronize did not sync")
		}
	}
}

// TestHostMemoryOption: with HostMemory, Alloc gives Go memory and ops stage it.
func TestHostMemoryOption(t *testing.T) {
	b, f := newFakeBackend(t, false)
	b.hostMemory = true
	x := b.Alloc(1000)
	if len(x) != 1000 || b.mm.contains(sliceRange(x, len(x))) || len(f.managed) != 0 {
		t.Fatal("HostMemory allocation came from managed memory")
	}
	b.GELUForward(x, x, 1000)
	if f.copies != 2 {
		t.Errorf("%d copies, want 2 (stage in, copy back)", f.copies)
	}
}
