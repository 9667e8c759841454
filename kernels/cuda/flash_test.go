package cuda

// Tests of the fused attention kernels (flash_attention.cu) on the
// emulator: shapes that leave partial tiles, masks that empty whole tiles,
// fully masked samples, cross-attention, nil and non-zero gradients, every
// padded head dim, and the choice between the fused and the cuBLAS path.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
)

// TestFlashConstantsMatchSource: the host's tiling constants (grid and
// shared-memory sizes, the emulator's transcription) are flash_attention.cu's.
func TestFlashConstantsMatchSource(t *testing.T) {
	src, err := cuFiles.ReadFile("flash_attention.cu")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"FA_THREADS": flashThreads, "FA_BR": flashBR, "FA_BC_FWD": flashBCFwd, "FA_BC_BWD": flashBCBwd} {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (\d+)`).FindSubmatch(src)
		if m == nil {
			t.Errorf("flash_attention.cu defines no %s", name)
			continue
		}
		if got, _ := strconv.Atoi(string(m[1])); got != want {
			t.Errorf("%s is %d in flash_attention.cu, %d in launch.go", name, got, want)
		}
	}
	b, _ := newFakeBackend(t, false)
	nargs := map[flashKind]int{flashForward: 17, flashDKDV: 20, flashDQ: 19, flashForwardTC: 16, flashDKDVTC: 19, flashDQTC: 18}
	for _, kind := range flashKinds {
		for _, hdp := range flashHeadDims {
			if sig, ok := b.sigs[kind.kernel(hdp)]; !ok || len(sig) != nargs[kind] {
				t.Errorf("kernel %s: signature %v, want %d arguments", kind.kernel(hdp), sig, nargs[kind])
			}
		}
	}
	// The largest instantiation needs an opt-in but fits Hopper's 227 KiB
	// and Ampere's 163 KiB.
	for _, kind := range flashKinds {
		if s := flashShared(kind, 128); s <= defaultSharedLimit || s > 163<<10 {
			t.Errorf("%s: %d bytes of shared memory", kind.kernel(128), s)
		}
		if s := flashShared(kind, 32); s > defaultSharedLimit {
			t.Errorf("%s: %d bytes of shared memory; head dims ≤ 32 should need no opt-in", kind.kernel(32), s)
		}
	}
	for hd, want := range map[int]int{1: 32, 8: 32, 32: 32, 33: 64, 72: 80, 80: 80, 81: 96, 96: 96, 128: 128, 129: 0, 0: 0} {
		if got := flashHeadDim(hd); got != want {
			t.Errorf("flashHeadDim(%d) = %d, want %d", hd, got, want)
		}
	}
}

// flashCase is one attention call of the emulator tests.
type flashCase struct {
	name                string
	B, H, Nq, Nk, hd    int
	packed              bool   // self-attention on one [B, N, 3D+pad] buffer
	mask                string // "", "mixed", "sample" (sample 1 all masked), "tiles" (a whole key tile masked)
	noDQ, noDK, noDV    bool   // nil gradients
	wantKernelsAtHeadDp int    // the padded head dim expected, 0: the cuBLAS path
}

// attnRun is one attention forward and backward's buffers. Rows are padded
// (rowPad floats past the heads) and the padding holds a sentinel that no
// kernel may overwrite.
type attnRun struct {
	d                     kernels.AttentionDims
	q, k, v, out, dout    []float32
	dq, dk, dv, lse, mask []float32
	dqBuf, dkvBuf         []float32
	start                 []float32 // dqBuf then dkvBuf before the backward
}

const (
	rowPad   = 3
	sentinel = 12345.5
)

// newAttnRun draws a case's inputs (fresh each call) into buffers from alloc.
func newAttnRun(r *rand.Rand, c flashCase, alloc func(int) []float32) *attnRun {
	D := c.H * c.hd
	d := kernels.AttentionDims{B: c.B, Heads: c.H, Nq: c.Nq, Nk: c.Nk, HeadDim: c.hd, ORow: D + rowPad, Scale: float32(1 / math.Sqrt(float64(c.hd)))}
	// fill draws rows of row floats, the last rowPad of each the sentinel.
	fill := func(rows, row int, scale float64) []float32 {
		s := alloc(rows * row)
		for i := range s {
			s[i] = float32(r.NormFloat64() * scale)
			if i%row >= row-rowPad {
				s[i] = sentinel
			}
		}
		return s
	}
	a := &attnRun{}
	if c.packed {
		row := 3*D + rowPad
		d.QRow, d.KRow, d.VRow = row, row, row
		qkv := fill(c.B*c.Nq, row, 1)
		a.dqBuf = fill(c.B*c.Nq, row, 0.1)
		a.q, a.k, a.v = qkv, qkv[D:], qkv[2*D:]
		a.dq, a.dk, a.dv = a.dqBuf, a.dqBuf[D:], a.dqBuf[2*D:]
	} else {
		d.QRow, d.KRow, d.VRow = D+rowPad, 2*D+rowPad, 2*D+rowPad
		a.q = fill(c.B*c.Nq, d.QRow, 1)
		kv := fill(c.B*c.Nk, d.KRow, 1)
		a.k, a.v = kv, kv[D:]
		a.dqBuf, a.dkvBuf = fill(c.B*c.Nq, d.QRow, 0.1), fill(c.B*c.Nk, d.KRow, 0.1)
		a.dq, a.dk, a.dv = a.dqBuf, a.dkvBuf, a.dkvBuf[D:]
	}
	a.d = d
	a.out, a.dout, a.lse = fill(c.B*c.Nq, d.ORow, 1), fill(c.B*c.Nq, d.ORow, 1), alloc(c.B*c.H*c.Nq)
	for i := range a.out {
		if i%d.ORow < D {
			a.out[i] = float32(math.NaN()) // every element must be written
		}
	}
	for i := range a.lse {
		a.lse[i] = float32(math.NaN())
	}
	if c.mask != "" {
		a.mask = alloc(c.B * c.Nk)
		for i := range a.mask {
			a.mask[i] = 1
		}
		switch c.mask {
		case "mixed":
			for i := 0; i < len(a.mask); i += 3 {
				a.mask[i] = 0
			}
			a.mask[1] = 0.5 // any nonzero keeps
		case "sample":
			a.mask[c.Nk-1] = 0
			clear(a.mask[c.Nk : 2*c.Nk])
		case "tiles": // sample 0: the first forward tile; sample 1: all but the last key
			clear(a.mask[:min(flashBCFwd, c.Nk)])
			clear(a.mask[c.Nk : 2*c.Nk-1])
		}
	}
	if c.noDQ {
		a.dq = nil
	}
	if c.noDK {
		a.dk = nil
	}
	if c.noDV {
		a.dv = nil
	}
	a.start = append(slices.Clone(a.dqBuf), a.dkvBuf...)
	return a
}

// cloneTo copies a run's inputs into fresh buffers from alloc (the
// reference and the backend under test get identical inputs).
func (a *attnRun) cloneTo(c flashCase, alloc func(int) []float32) *attnRun {
	cp := func(s []float32) []float32 {
		if s == nil {
			return nil
		}
		d := alloc(len(s))
		copy(d, s)
		return d
	}
	b := *a
	D := c.H * c.hd
	b.dqBuf, b.dkvBuf = cp(a.dqBuf), cp(a.dkvBuf)
	if c.packed {
		qkv := cp(a.q[:len(a.dqBuf)])
		b.q, b.k, b.v = qkv, qkv[D:], qkv[2*D:]
		b.dq, b.dk, b.dv = b.dqBuf, b.dqBuf[D:], b.dqBuf[2*D:]
	} else {
		b.q = cp(a.q)
		kv := cp(a.k[:len(a.dkvBuf)])
		b.k, b.v = kv, kv[D:]
		b.dq, b.dk, b.dv = b.dqBuf, b.dkvBuf, b.dkvBuf[D:]
	}
	if a.dq == nil {
		b.dq = nil
	}
	if a.dk == nil {
		b.dk = nil
	}
	if a.dv == nil {
		b.dv = nil
	}
	b.out, b.dout, b.lse, b.mask = cp(a.out), cp(a.dout), cp(a.lse), cp(a.mask)
	return &b
}

func (a *attnRun) run(be kernels.Backend) {
	be.AttentionForward(a.out, a.lse, a.q, a.k, a.v, a.mask, a.d)
	be.AttentionBackward(a.dq, a.dk, a.dv, a.dout, a.q, a.k, a.v, a.mask, a.out, a.lse, a.d)
}

// runReference is run on kernels.Reference, which wants every gradient:
// nil ones go to scratch.
func (a *attnRun) runReference() {
	dq, dk, dv := a.dq, a.dk, a.dv
	if dq == nil {
		dq = make([]float32, len(a.q))
	}
	if dk == nil {
		dk = make([]float32, len(a.k))
	}
	if dv == nil {
		dv = make([]float32, len(a.v))
	}
	ref := kernels.Reference{}
	ref.AttentionForward(a.out, a.lse, a.q, a.k, a.v, a.mask, a.d)
	ref.AttentionBackward(dq, dk, dv, a.dout, a.q, a.k, a.v, a.mask, a.out, a.lse, a.d)
}

// heads gathers the head elements of a [rows, row] buffer (its padding left out).
func heads(buf []float32, rows, row, width int) []float32 {
	var out []float32
	for r := range rows {
		out = append(out, buf[r*row:r*row+width]...)
	}
	return out
}

// delta is got − start, the part a backward added.
func delta(got, start []float32) []float32 {
	d := make([]float32, len(got))
	for i := range got {
		d[i] = got[i] - start[i]
	}
	return d
}

// compareRuns checks got against want (the reference) tensor by tensor and
// returns the worst relative error; gradients are compared by what the
// backward added to their random starting values.
func compareRuns(t *testing.T, c flashCase, got, want *attnRun, outTol, gradTol float64) float64 {
	t.Helper()
	d := got.d
	D := c.H * c.hd
	worst := 0.0
	cmp := func(name string, g, w []float32, tol float64) {
		t.Helper()
		e := kernelstest.RelErr(g, w)
		if !(e <= tol) {
			t.Errorf("%s: %s relative error %.3g > %g", c.name, name, e, tol)
		}
		worst = max(worst, e)
	}
	cmp("out", heads(got.out, c.B*c.Nq, d.ORow, D), heads(want.out, c.B*c.Nq, d.ORow, D), outTol)
	var gl, wl []float32
	for i := range want.lse {
		if math.IsInf(float64(want.lse[i]), 1) != math.IsInf(float64(got.lse[i]), 1) {
			t.Errorf("%s: lse[%d] = %v, reference %v", c.name, i, got.lse[i], want.lse[i])
		} else if !math.IsInf(float64(want.lse[i]), 1) {
			gl, wl = append(gl, got.lse[i]), append(wl, want.lse[i])
		}
	}
	cmp("lse", gl, wl, outTol)
	nStart := len(got.dqBuf)
	gq, wq := delta(got.dqBuf, got.start[:nStart]), delta(want.dqBuf, want.start[:nStart])
	gkv, wkv, n, row, kv := gq, wq, c.B*c.Nq, d.QRow, D // packed: dk and dv follow dq in each row
	if !c.packed {
		gkv, wkv, n, row, kv = delta(got.dkvBuf, got.start[nStart:]), delta(want.dkvBuf, want.start[nStart:]), c.B*c.Nk, d.KRow, 0
	}
	if !c.noDQ {
		cmp("dq", heads(gq, c.B*c.Nq, d.QRow, D), heads(wq, c.B*c.Nq, d.QRow, D), gradTol)
	}
	if !c.noDK {
		cmp("dk", heads(gkv[kv:], n, row, D), heads(wkv[kv:], n, row, D), gradTol)
	}
	if !c.noDV {
		cmp("dv", heads(gkv[kv+D:], n, row, D), heads(wkv[kv+D:], n, row, D), gradTol)
	}
	return worst
}

// checkUntouched: row padding kept its sentinel, nil gradients kept their
// values, and a fully masked sample got zero output and no gradient.
func checkUntouched(t *testing.T, c flashCase, a *attnRun) {
	t.Helper()
	d := a.d
	D := c.H * c.hd
	for name, bs := range map[string]struct {
		buf []float32
		row int
	}{"out": {a.out, d.ORow}, "dq": {a.dqBuf, d.QRow}, "dkv": {a.dkvBuf, d.KRow}} {
		for i := bs.row - rowPad; i < len(bs.buf); i += bs.row {
			for j := range rowPad {
				if bs.buf[i+j] != sentinel {
					t.Fatalf("%s: %s row padding [%d] overwritten: %v", c.name, name, i+j, bs.buf[i+j])
				}
			}
		}
	}
	all := append(slices.Clone(a.dqBuf), a.dkvBuf...)
	unchanged := func(name string, n, row, offset int, base int) {
		for r := range n {
			for j := range D {
				i := base + r*row + offset + j
				if math.Float32bits(all[i]) != math.Float32bits(a.start[i]) {
					t.Fatalf("%s: %s changed at %d (%v → %v)", c.name, name, i, a.start[i], all[i])
				}
			}
		}
	}
	nq := len(a.dqBuf)
	kvBase, kvRow, kOff, vOff := nq, d.KRow, 0, D
	if c.packed {
		kvBase, kvRow, kOff, vOff = 0, d.QRow, D, 2*D
	}
	if c.noDQ {
		unchanged("nil dq", c.B*c.Nq, d.QRow, 0, 0)
	}
	if c.noDK {
		unchanged("nil dk", c.B*c.Nk, kvRow, kOff, kvBase)
	}
	if c.noDV {
		unchanged("nil dv", c.B*c.Nk, kvRow, vOff, kvBase)
	}
	if c.mask == "sample" { // sample 1: zero output, lse +inf, no gradient
		for i := c.Nq * d.ORow; i < 2*c.Nq*d.ORow; i++ {
			if i%d.ORow < D && a.out[i] != 0 {
				t.Fatalf("%s: fully masked sample's out[%d] = %v", c.name, i, a.out[i])
			}
		}
		for i := c.H * c.Nq; i < 2*c.H*c.Nq; i++ {
			if !math.IsInf(float64(a.lse[i]), 1) {
				t.Fatalf("%s: fully masked sample's lse[%d] = %v", c.name, i, a.lse[i])
			}
		}
		if !c.noDQ {
			unchanged("masked sample's dq", c.Nq, d.QRow, 0, c.Nq*d.QRow)
		}
		if !c.noDK {
			unchanged("masked sample's dk", c.Nk, kvRow, kOff, kvBase+c.Nk*kvRow)
		}
		if !c.noDV {
			unchanged("masked sample's dv", c.Nk, kvRow, vOff, kvBase+c.Nk*kvRow)
		}
	}
}

// flashCases cover the tiles' edges: 1, 7, 65 and 130 rows or keys (tiles of
// 64 query rows, 64 keys forward, 32 backward), every padded head dim,
// self and cross attention, masks that empty whole tiles.
var flashCases = []flashCase{
	{name: "1x1 hd8", B: 2, H: 2, Nq: 1, Nk: 1, hd: 8, wantKernelsAtHeadDp: 32},
	{name: "self 65 packed hd32", B: 2, H: 2, Nq: 65, Nk: 65, hd: 32, packed: true, wantKernelsAtHeadDp: 32},
	{name: "cross 7x65 mixed hd40", B: 3, H: 2, Nq: 7, Nk: 65, hd: 40, mask: "mixed", wantKernelsAtHeadDp: 64},
	{name: "cross 65x7 masked sample hd16", B: 3, H: 3, Nq: 65, Nk: 7, hd: 16, mask: "sample", wantKernelsAtHeadDp: 32},
	{name: "cross 130x130 empty tiles hd72", B: 2, H: 1, Nq: 130, Nk: 130, hd: 72, mask: "tiles", wantKernelsAtHeadDp: 80},
	{name: "cross 7x130 hd128 nil dq", B: 2, H: 1, Nq: 7, Nk: 130, hd: 128, mask: "sample", noDQ: true, wantKernelsAtHeadDp: 128},
	{name: "self 7 packed nil dk dv", B: 2, H: 3, Nq: 7, Nk: 7, hd: 24, packed: true, noDK: true, noDV: true, wantKernelsAtHeadDp: 32},
	{name: "cross 7x65 nil dv hd64", B: 2, H: 2, Nq: 7, Nk: 65, hd: 64, noDV: true, wantKernelsAtHeadDp: 64},
	{name: "self 65 hd96", B: 1, H: 2, Nq: 65, Nk: 65, hd: 96, wantKernelsAtHeadDp: 96},
	{name: "head dim 136: cuBLAS path", B: 2, H: 1, Nq: 7, Nk: 5, hd: 136, mask: "mixed"},
}

// TestEmulatedFlashAttention runs every case forward and backward on the
// emulator, fp32 and bf16, against kernels.Reference: fp32 at the
// conformance suite's 2e-5, bf16 at the model's bf16 tolerances, and the
// bf16 fused path also against the bf16 cuBLAS path. bf16 runs twice: with
// the tensor-core forward (an sm_90 device) and with the FMA forward (an
// sm_75 one). It checks which kernels ran, that every output element was
// written (out starts as NaN), and that nothing outside the tensors
// changed.
func TestEmulatedFlashAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range flashCases {
		for _, mode := range []string{"fp32", "bf16", "bf16/sm75"} {
			bf16 := mode != "fp32"
			name := c.name
			if bf16 {
				name += "/" + mode
			}
			t.Run(name, func(t *testing.T) {
				b, f := newFakeBackend(t, bf16)
				f.emulate = true
				if mode == "bf16/sm75" {
					b.tensorCores = false
				}
				gemmBackend, gf := newFakeBackend(t, bf16)
				gf.emulate = true
				gemmBackend.attention = attnGEMM
				ref := newAttnRun(r, c, func(n int) []float32 { return make([]float32, n) })
				got, gemm := ref.cloneTo(c, b.Alloc), ref.cloneTo(c, gemmBackend.Alloc)
				got.run(b)
				if err := b.Synchronize(); err != nil {
					t.Fatal(err)
				}
				checkLaunches(t, c, f, b)
				checkUntouched(t, c, got)
				ref.runReference()
				outTol, gradTol := kernelstest.Tol, kernelstest.Tol
				if bf16 {
					outTol, gradTol = bf16Tol, bf16GradTol
				}
				worst := compareRuns(t, c, got, ref, outTol, gradTol)
				if !bf16 || c.wantKernelsAtHeadDp == 0 {
					t.Logf("worst relative error vs the reference %.2g", worst)
					return
				}
				// The same inputs through the bf16 cuBLAS path: the fused
				// kernels round the same operands, so the two agree far
				// inside the reference tolerance.
				gemm.run(gemmBackend)
				if err := gemmBackend.Synchronize(); err != nil {
					t.Fatal(err)
				}
				vsGEMM := compareRuns(t, c, got, gemm, 5e-3, 5e-3)
				t.Logf("worst relative error vs the reference %.2g, vs the bf16 cuBLAS path %.2g", worst, vsGEMM)
			})
		}
	}
}

// checkLaunches: the fused kernels at the expected padded head dim, and
// nothing of the cuBLAS path (or the reverse); the dK/dV and dQ kernels
// only when their gradients are wanted, with the opt-in above 48 KiB.
func checkLaunches(t *testing.T, c flashCase, f *fakeDevice, b *Backend) {
	t.Helper()
	var want []string
	if hdp := c.wantKernelsAtHeadDp; hdp != 0 {
		want = append(want, "attn_rowdot", b.flashKind(flashForward).kernel(hdp))
		if !c.noDK || !c.noDV {
			want = append(want, b.flashKind(flashDKDV).kernel(hdp))
		}
		if !c.noDQ {
			want = append(want, b.flashKind(flashDQ).kernel(hdp))
		}
		if len(f.gemms) != 0 {
			t.Errorf("%s: %d GEMMs on the fused path", c.name, len(f.gemms))
		}
		for _, l := range f.launches {
			if strings.HasPrefix(l.name, "flash_attn_") && (l.cfg.shared > defaultSharedLimit) != (f.optIns[l.name] >= l.cfg.shared) {
				t.Errorf("%s: %s with %d bytes of shared memory, opted in to %d", c.name, l.name, l.cfg.shared, f.optIns[l.name])
			}
		}
	} else {
		want = []string{"attn_rowdot", "attn_softmax_backward", "attn_softmax_forward", "attn_softmax_recompute"}
		if f.pointerGemms == 0 {
			t.Errorf("%s: no batched GEMM on the cuBLAS path", c.name)
		}
	}
	got := slices.DeleteFunc(f.kernelsLaunched(), func(s string) bool { return s == "cast_bf16" })
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: launched %v, want %v", c.name, got, want)
	}
}

// TestFlashFallsBackWhereSharedMemoryIsShort: on a device that allows
// blocks only the default 48 KiB, head dims ≤ 32 still run fused (and
// need no opt-in), wider ones take the cuBLAS path.
func TestFlashFallsBackWhereSharedMemoryIsShort(t *testing.T) {
	for _, hd := range []int{32, 64} {
		b, f := newFakeBackend(t, false)
		f.dinfo.MaxSharedPerBlockOptin = defaultSharedLimit
		c := flashCase{name: fmt.Sprintf("hd%d on 48 KiB", hd), B: 1, H: 2, Nq: 9, Nk: 9, hd: hd}
		if hd == 32 {
			c.wantKernelsAtHeadDp = 32
		}
		a := newAttnRun(rand.New(rand.NewPCG(1, 2)), c, b.Alloc)
		a.run(b)
		if err := b.Synchronize(); err != nil {
			t.Fatal(err)
		}
		checkLaunches(t, c, f, b)
		if len(f.optIns) != 0 {
			t.Errorf("%s: opt-ins %v", c.name, f.optIns)
		}
	}
}

// TestAttentionOption: FMTRAIN_CUDA_ATTENTION's values.
func TestAttentionOption(t *testing.T) {
	for _, c := range []struct {
		s     string
		bf16  bool
		major int
		want  attnMode
	}{
		{"", false, 9, attnFused}, {"", true, 9, attnFused}, {"", true, 8, attnFused},
		{"", false, 7, attnFused}, {"", true, 7, attnGEMM}, // no bf16 tensor cores before sm_80
		{"fused", false, 9, attnFused}, {"fused", true, 7, attnFused},
		{"gemm", false, 9, attnGEMM}, {"gemm", true, 9, attnGEMM},
	} {
		if m, err := parseAttention(c.s, c.bf16, c.major); err != nil || m != c.want {
			t.Errorf("parseAttention(%q, bf16 %v, sm_%d0) = %v, %v; want %v", c.s, c.bf16, c.major, m, err, c.want)
		}
	}
	if _, err := parseAttention("flash", true, 9); err == nil || !strings.Contains(err.Error(), "FMTRAIN_CUDA_ATTENTION") {
		t.Errorf("parseAttention(flash): %v", err)
	}
	t.Setenv("FMTRAIN_CUDA_ATTENTION", "gemm")
	if o := optionsFromEnv(true); o.Attention != "gemm" {
		t.Errorf("optionsFromEnv: Attention %q", o.Attention)
	}
}

// TestGPUCheckComparesAttention: scripts/gpu-check.sh checks and times the
// fused kernels against the cuBLAS attention path.
func TestGPUCheckComparesAttention(t *testing.T) {
	src, err := os.ReadFile("../../scripts/gpu-check.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TestGPUFlashAttention", "FMTRAIN_CUDA_ATTENTION=gemm", "BenchmarkGPUAttention", "gemm-attn"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("gpu-check.sh does not contain %q", want)
		}
	}
}
