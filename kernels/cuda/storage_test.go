package cuda

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/model/modeltest"
)

// storageFixture runs ops on the emulated mixed-precision backend with
// activations as float32 (managed memory) and as bf16 storage.
type storageFixture struct {
	t   *testing.T
	b   *Backend
	rng *rand.Rand
}

func newStorageFixture(t *testing.T, mode attnMode) *storageFixture {
	return &storageFixture{t: t, b: newEmuBackend(t, true, mode), rng: rand.New(rand.NewPCG(7, 11))}
}

// values returns n random values exactly representable in bf16, so that
// float32 and bf16 storage hold the same numbers.
func (s *storageFixture) values(n int) []float32 {
	v := s.b.Alloc(n)
	for i := range v {
		v[i] = bf16Float(bf16Bits(float32(s.rng.NormFloat64())))
	}
	return v
}

// store returns bf16 storage holding src (ResidualForward with zeros
// writes it: exact for bf16 values).
func (s *storageFixture) store(src []float32) []float32 {
	s.t.Helper()
	st, err := s.b.AllocActivations(len(src))
	if err != nil {
		s.t.Fatal(err)
	}
	s.b.ResidualForward(st, src, s.b.Alloc(len(src)), len(src))
	return st
}

// load reads bf16 storage back into float32.
func (s *storageFixture) load(st []float32) []float32 {
	out := s.b.Alloc(len(st))
	s.b.ResidualForward(out, st, s.b.Alloc(len(st)), len(st))
	return out
}

// sameBits fails unless got equals want bit for bit, or equals want
// rounded to bf16 when rounded.
func (s *storageFixture) sameBits(what string, got, want []float32, rounded bool) {
	s.t.Helper()
	if err := s.b.Synchronize(); err != nil {
		s.t.Fatal(err)
	}
	for i := range want {
		w := want[i]
		if rounded {
			w = bf16Float(bf16Bits(w))
		}
		if math.Float32bits(got[i]) != math.Float32bits(w) {
			s.t.Errorf("%s: element %d is %v with bf16 storage, %v without", what, i, got[i], w)
			return
		}
	}
}

// TestStorageRoundTrip: values written to bf16 storage are rounded once,
// nearest-even, and read back exactly.
func TestStorageRoundTrip(t *testing.T) {
	s := newStorageFixture(t, attnGEMM)
	x := s.b.Alloc(1000)
	for i := range x {
		x[i] = float32(s.rng.NormFloat64()) * 100
	}
	s.sameBits("round trip", s.load(s.store(x)), x, true)
	if bf16Float(bf16Bits(x[0])) == x[0] {
		t.Fatal("the input should not be bf16 already")
	}
}

// TestStorageOpsMatchFloat32: every op that takes activations gives the
// same bits with them in bf16 storage as with the same values in float32
// (outputs into storage: the float32 result rounded once), on both
// attention paths. This checks the host side: which arguments carry st
// bits, element sizes in pointer offsets (packed q/k/v views), GEMM
// operand and output types, and the bias_store fallback.
func TestStorageOpsMatchFloat32(t *testing.T) {
	for name, mode := range attnModes {
		t.Run(name, func(t *testing.T) { checkStorageOps(t, mode) })
	}
}

func checkStorageOps(t *testing.T, mode attnMode) {
	s := newStorageFixture(t, mode)
	b := s.b
	const B, N, S, D, heads, M = 2, 19, 7, 48, 3, 96
	T := B * N
	grad := func(n int) []float32 { return s.values(n) } // non-zero: ops accumulate
	clone := func(v []float32) []float32 { c := b.Alloc(len(v)); copy(c, v); return c }

	h := s.values(T * D)
	// Layer norm: output into storage; backward reads it.
	xhat, mean, rstd := b.Alloc(T*D), b.Alloc(T), b.Alloc(T)
	b.LayerNormForward(xhat, mean, rstd, h, T, D)
	xhatS := s.store(s.values(T * D))
	b.LayerNormForward(xhatS, b.Alloc(T), b.Alloc(T), h, T, D)
	s.sameBits("LayerNormForward out", s.load(xhatS), xhat, true)
	xr := s.load(xhatS) // the stored (rounded) LN output, as float32
	dout, din := s.values(T*D), grad(T*D)
	din2 := clone(din)
	b.LayerNormBackward(din, dout, xr, rstd, T, D)
	b.LayerNormBackward(din2, dout, xhatS, rstd, T, D)
	s.sameBits("LayerNormBackward din", din2, din, false)

	// Modulate, both ways round.
	mod := s.values(B * 6 * D)
	a := b.Alloc(T * D)
	b.ModulateForward(a, xr, mod[0:], mod[D:], B, N, D, 6*D)
	aS := s.store(s.values(T * D))
	b.ModulateForward(aS, xhatS, mod[0:], mod[D:], B, N, D, 6*D)
	s.sameBits("ModulateForward out", s.load(aS), a, true)
	dmod, dmod2 := grad(B*6*D), b.Alloc(B*6*D)
	copy(dmod2, dmod)
	din, din2 = grad(T*D), b.Alloc(T*D)
	copy(din2, din)
	b.ModulateBackward(din, dmod[0:], dmod[D:], dout, xr, mod[D:], B, N, D, 6*D)
	b.ModulateBackward(din2, dmod2[0:], dmod2[D:], dout, xhatS, mod[D:], B, N, D, 6*D)
	s.sameBits("ModulateBackward din", din2, din, false)
	s.sameBits("ModulateBackward dshift, dscale", dmod2, dmod, false)

	// Linear layers: with a bias (cuBLASLt epilogue), without (GEMM into
	// scratch + bias_store), and with cuBLASLt declining.
	ar := s.load(aS)
	w, bias := s.values(3*D*D), s.values(3*D)
	f := b.dev.(*fakeDevice)
	for _, c := range []struct {
		name  string
		bias  []float32
		noAlg bool
	}{{"bias", bias, false}, {"no bias", nil, false}, {"bias, no cuBLASLt", bias, true}} {
		f.noLtAlgo = c.noAlg
		qkv := b.Alloc(T * 3 * D)
		b.LinearForward(qkv, ar, w, c.bias, T, D, 3*D)
		qkvS := s.store(s.values(T * 3 * D))
		b.LinearForward(qkvS, aS, w, c.bias, T, D, 3*D)
		s.sameBits("LinearForward out ("+c.name+")", s.load(qkvS), qkv, true)
	}
	f.noLtAlgo = false
	dqkv := s.values(T * 3 * D)
	dw, db, dw2, db2 := grad(3*D*D), grad(3*D), b.Alloc(3*D*D), b.Alloc(3*D)
	copy(dw2, dw)
	copy(db2, db)
	din, din2 = grad(T*D), b.Alloc(T*D)
	copy(din2, din)
	b.LinearBackward(din, dw, db, dqkv, ar, w, T, D, 3*D)
	b.LinearBackward(din2, dw2, db2, dqkv, aS, w, T, D, 3*D)
	s.sameBits("LinearBackward din", din2, din, false)
	s.sameBits("LinearBackward dweight", dw2, dw, false)
	s.sameBits("LinearBackward dbias", db2, db, false)

	// Gated and plain residuals read y from storage.
	y := s.values(T * D)
	yS := s.store(y)
	h1, h2 := clone(h), clone(h)
	b.GatedResidualForward(h1, y, mod[2*D:], B, N, D, 6*D)
	b.GatedResidualForward(h2, yS, mod[2*D:], B, N, D, 6*D)
	s.sameBits("GatedResidualForward h", h2, h1, false)
	dy, dg, dy2, dg2 := grad(T*D), grad(B*6*D), b.Alloc(T*D), b.Alloc(B*6*D)
	copy(dy2, dy)
	copy(dg2, dg)
	b.GatedResidualBackward(dy, dg[2*D:], dout, y, mod[2*D:], B, N, D, 6*D)
	b.GatedResidualBackward(dy2, dg2[2*D:], dout, yS, mod[2*D:], B, N, D, 6*D)
	s.sameBits("GatedResidualBackward dy", dy2, dy, false)
	s.sameBits("GatedResidualBackward dgate", dg2, dg, false)
	h1, h2 = clone(h), clone(h)
	b.ResidualForward(h1, h1, y, T*D)
	b.ResidualForward(h2, h2, yS, T*D)
	s.sameBits("ResidualForward", h2, h1, false)

	// GELU and SiLU.
	u := s.values(T * M)
	uS := s.store(u)
	for _, act := range []struct {
		name string
		fwd  func(out, in []float32, n int)
		bwd  func(din, dout, in []float32, n int)
	}{{"GELU", b.GELUForward, b.GELUBackward}, {"SiLU", b.SiLUForward, b.SiLUBackward}} {
		g := b.Alloc(T * M)
		act.fwd(g, u, T*M)
		gS := s.store(s.values(T * M))
		act.fwd(gS, uS, T*M)
		s.sameBits(act.name+" forward", s.load(gS), g, true)
		dg := s.values(T * M)
		d1, d2 := grad(T*M), b.Alloc(T*M)
		copy(d2, d1)
		act.bwd(d1, dg, u, T*M)
		act.bwd(d2, dg, uS, T*M)
		s.sameBits(act.name+" backward", d2, d1, false)
	}

	// Attention: self-attention over a packed qkv view of one store, and
	// cross-attention with a key mask, forward and backward.
	hd := D / heads
	scale := float32(1 / math.Sqrt(float64(hd)))
	qkv := s.values(T * 3 * D)
	qkvS := s.store(qkv)
	q, kv := s.values(T*D), s.values(B*S*2*D)
	qS, kvS := s.store(q), s.store(kv)
	mask := b.Alloc(B * S)
	for i := range mask {
		if i%3 != 1 {
			mask[i] = 1
		}
	}
	self := kernels.AttentionDims{B: B, Heads: heads, Nq: N, Nk: N, HeadDim: hd, QRow: 3 * D, KRow: 3 * D, VRow: 3 * D, ORow: D, Scale: scale}
	cross := kernels.AttentionDims{B: B, Heads: heads, Nq: N, Nk: S, HeadDim: hd, QRow: D, KRow: 2 * D, VRow: 2 * D, ORow: D, Scale: scale}
	for _, c := range []struct {
		name                string
		d                   kernels.AttentionDims
		q, k, v, qs, ks, vs []float32
		mask                []float32
		nq, nk              int
	}{
		{"self", self, qkv, qkv[D:], qkv[2*D:], qkvS, qkvS[D:], qkvS[2*D:], nil, T * 3 * D, T * 3 * D},
		{"cross", cross, q, kv, kv[D:], qS, kvS, kvS[D:], mask, T * D, B * S * 2 * D},
	} {
		out, lse := b.Alloc(T*D), b.Alloc(B*heads*N)
		b.AttentionForward(out, lse, c.q, c.k, c.v, c.mask, c.d)
		outS, lse2 := s.store(s.values(T*D)), b.Alloc(B*heads*N)
		b.AttentionForward(outS, lse2, c.qs, c.ks, c.vs, c.mask, c.d)
		s.sameBits(c.name+" attention out", s.load(outS), out, true)
		s.sameBits(c.name+" attention lse", lse2, lse, false)
		// Backward from the stored (rounded) output in both runs.
		outR := s.load(outS)
		do := s.values(T * D)
		dq1, dk1 := grad(c.nq), grad(c.nk)
		dq2, dk2 := clone(dq1), clone(dk1)
		var dv1, dv2 []float32
		if c.name == "self" {
			dk1, dk2 = dq1[D:], dq2[D:]
			dv1, dv2 = dq1[2*D:], dq2[2*D:]
		} else {
			dv1, dv2 = dk1[D:], dk2[D:]
		}
		b.AttentionBackward(dq1, dk1, dv1, do, c.q, c.k, c.v, c.mask, outR, lse, c.d)
		b.AttentionBackward(dq2, dk2, dv2, do, c.qs, c.ks, c.vs, c.mask, outS, lse, c.d)
		s.sameBits(c.name+" attention dq", dq2, dq1, false)
		s.sameBits(c.name+" attention dk, dv", dk2, dk1, false)
	}
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

// TestStorageRefusedWhereFloat32Only: bf16 storage passed as a gradient or
// to an op that takes float32 only stops the backend with an error naming
// the op, and nothing runs.
func TestStorageRefusedWhereFloat32Only(t *testing.T) {
	for _, c := range []struct {
		op  string
		run func(b *Backend, st, x []float32)
	}{
		{"LinearBackward", func(b *Backend, st, x []float32) { b.LinearBackward(st, x, nil, x, x, x, 4, 4, 4) }},
		{"MSEForward", func(b *Backend, st, x []float32) { b.MSEForward(st, x, 16) }},
		{"Gemm", func(b *Backend, st, x []float32) { b.Gemm(false, false, 4, 4, 4, 1, st, 4, x, 4, 0, x, 4) }},
		{"Zero", func(b *Backend, st, x []float32) { b.Zero(st) }},
		{"gelu_backward", func(b *Backend, st, x []float32) { b.GELUBackward(st, x, x, 16) }},
	} {
		t.Run(c.op, func(t *testing.T) {
			b, f := newFakeBackend(t, true)
			st, err := b.AllocActivations(16)
			if err != nil {
				t.Fatal(err)
			}
			before := len(f.launches) + len(f.gemms)
			c.run(b, st, b.Alloc(16))
			err = b.Synchronize()
			if err == nil || !strings.Contains(err.Error(), c.op) || !strings.Contains(err.Error(), "bf16 activation storage") {
				t.Errorf("error %v, want one naming %s and bf16 activation storage", err, c.op)
			}
			if len(f.launches)+len(f.gemms) != before {
				t.Error("the op ran")
			}
		})
	}
}

// TestAllocActivationsDeclines: the fp32 backend, FP32Activations and a
// device short of memory give an error (callers fall back to float32),
// and Close releases storage and handles.
func TestAllocActivationsDeclines(t *testing.T) {
	b, _ := newFakeBackend(t, false)
	if _, err := b.AllocActivations(10); err == nil {
		t.Error("the fp32 backend gave bf16 storage")
	}
	b, _ = newFakeBackend(t, true)
	b.fp32Activations = true
	if _, err := b.AllocActivations(10); err == nil || !strings.Contains(err.Error(), "FMTRAIN_CUDA_ACTIVATIONS") {
		t.Errorf("with FP32Activations: %v", err)
	}
	b, f := newFakeBackend(t, true)
	f.freeMem = 3 << 30
	if _, err := b.AllocActivations(1 << 30); err == nil || !strings.Contains(err.Error(), "free on the device") {
		t.Errorf("2 GiB asked with 1 GiB to spare: %v", err)
	}
	if _, err := b.AllocActivations(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.blocks) != 0 || len(b.handles) != 0 || len(b.stores.handles.ranges) != 0 {
		t.Errorf("Close left %d device blocks, %d handles, %d handle ranges", len(f.blocks), len(b.handles), len(b.stores.handles.ranges))
	}
}

// faultSink keeps TestStorageHostAccessFaults's load from being optimised away.
var faultSink float32

// TestStorageHostAccessFaults: a handle is address space only, so a host
// read faults instead of returning stale or foreign data.
func TestStorageHostAccessFaults(t *testing.T) {
	b, _ := newFakeBackend(t, true)
	st, err := b.AllocActivations(1024)
	if err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	faulted := func() (ok bool) {
		defer func() { ok = recover() != nil }()
		faultSink = st[100]
		return false
	}()
	if !faulted {
		t.Error("reading a bf16 storage handle on the host did not fault")
	}
}

// TestModelUsesStorage: on the emulated mixed-precision backend the model
// keeps its saved activations in bf16 storage (one allocation), and its
// results move by no more than bf16 rounding against the same model with
// FP32Activations; the reference vectors hold either way
// (TestEmulatedReferenceVectors runs the stored path).
func TestModelUsesStorage(t *testing.T) {
	c := modeltest.LoadCase(t, modeltest.VectorFiles(t)[0])
	run := func(fp32Acts bool) (out, grads []float32, handles int) {
		b := newEmuBackend(t, true, attnGEMM)
		b.fp32Activations = fp32Acts
		m, err := model.New(c.Config, b)
		if err != nil {
			t.Fatal(err)
		}
		if err := model.ReadParams(c.File, c.Config, m.Params()); err != nil {
			t.Fatal(err)
		}
		y, err := m.Forward(context.Background(), c.Input)
		if err != nil {
			t.Fatal(err)
		}
		dOut := make([]float32, len(y))
		b.MSEBackward(dOut, y, c.Tensor(t, "target"), len(y), 1)
		m.ZeroGrad()
		if err := m.Backward(context.Background(), dOut); err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), y...), append([]float32(nil), m.Grads()...), len(b.handles)
	}
	out, grads, handles := run(false)
	out32, grads32, handles32 := run(true)
	if handles != 1 || handles32 != 0 {
		t.Errorf("%d storage allocations with bf16 activations (want 1), %d with FP32Activations (want 0)", handles, handles32)
	}
	for _, v := range []struct {
		name      string
		got, want []float32
	}{{"out", out, out32}, {"grads", grads, grads32}} {
		e := kernelstest.RelErr(v.got, v.want)
		if e == 0 || e > 2e-2 {
			t.Errorf("%s: bf16 activations moved the result by %.3g relative; want some rounding, within 2e-2", v.name, e)
		}
		t.Logf("%s: %.3g relative between bf16 and float32 activations", v.name, e)
	}
}

// TestDeviceMemoryInUse: total less free, as `fmctl bench step` reports it.
func TestDeviceMemoryInUse(t *testing.T) {
	b, f := newFakeBackend(t, true)
	f.freeMem = f.dinfo.TotalMemory - 3<<30
	if used, err := b.DeviceMemoryInUse(); err != nil || used != 3<<30 {
		t.Errorf("DeviceMemoryInUse = %d, %v; want %d", used, err, 3<<30)
	}
}
