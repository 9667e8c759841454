// Package kernelstest is the conformance suite of kernels.Backend: Run
// executes every op of a backend on small random inputs and compares it with
// kernels.Reference (llm.c's validate_result). Every backend's own tests call
// it (the CPU backend's in kernels, the CUDA backend's in kernels/cuda).
package kernelstest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
)

// Tol is the largest relative error ‖got−want‖/‖want‖ accepted for an op.
const Tol = 2e-5

// RelErr returns ‖got−want‖₂/‖want‖₂ accumulated in float64 (‖got−want‖₂
// when want is zero).
func RelErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func clone(v []float32) []float32 { return append([]float32(nil), v...) }

func check(t *testing.T, name string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", name, len(got), len(want))
	}
	for i, v := range got {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Errorf("%s: element %d is %v", name, i, v)
			return
		}
	}
	if e := RelErr(got, want); e > Tol {
		t.Errorf("%s: relative error %.3g > %.1g (got[:4]=%v want[:4]=%v)", name, e, Tol, got[:min(4, len(got))], want[:min(4, len(want))])
	}
}

// Run checks every op of b against kernels.Reference.
func Run(t *testing.T, b kernels.Backend) {
	ref := kernels.Reference{}
	r := rand.New(rand.NewPCG(1, 2))
	sync := func() {
		if s, ok := b.(kernels.Synchronizer); ok {
			if err := s.Synchronize(); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("Gemm", func(t *testing.T) {
		for _, sh := range [][3]int{{1, 1, 1}, {7, 5, 3}, {70, 130, 33}, {200, 40, 64}, {3, 300, 17}, {5, 4, 0}} {
			for _, tA := range []bool{false, true} {
				for _, tB := range []bool{false, true} {
					m, n, k := sh[0], sh[1], sh[2]
					lda, ldb, ldc := k+3, n+1, n+2
					if tA {
						lda = m + 3
					}
					if tB {
						ldb = k + 1
					}
					rowsA, rowsB := m, k
					if tA {
						rowsA = k
					}
					if tB {
						rowsB = n
					}
					a, bb, c := randn(r, rowsA*lda+1), randn(r, rowsB*ldb+1), randn(r, m*ldc)
					for _, beta := range []float32{0, 1, 0.5} {
						want, got := clone(c), clone(c)
						ref.Gemm(tA, tB, m, n, k, 1.5, a, lda, bb, ldb, beta, want, ldc)
						b.Gemm(tA, tB, m, n, k, 1.5, a, lda, bb, ldb, beta, got, ldc)
						sync()
						check(t, fmt.Sprintf("m=%d n=%d k=%d tA=%v tB=%v beta=%v", m, n, k, tA, tB, beta), got, want)
					}
				}
			}
		}
	})

	t.Run("GemmBatched", func(t *testing.T) {
		m, n, k, batch := 9, 11, 13, 5
		for _, tA := range []bool{false, true} {
			sa, sb, sc := m*k+2, k*n+3, m*n+1
			a, bb, c := randn(r, batch*sa), randn(r, batch*sb), randn(r, batch*sc)
			want, got := clone(c), clone(c)
			lda := k
			if tA {
				lda = m
			}
			ref.GemmBatched(tA, false, m, n, k, 1, a, lda, sa, bb, n, sb, 1, want, n, sc, batch)
			b.GemmBatched(tA, false, m, n, k, 1, a, lda, sa, bb, n, sb, 1, got, n, sc, batch)
			sync()
			check(t, fmt.Sprintf("tA=%v", tA), got, want)
		}
	})

	t.Run("Linear", func(t *testing.T) {
		for _, sh := range [][3]int{{3, 5, 7}, {70, 48, 96}, {130, 33, 20}} {
			rows, in, out := sh[0], sh[1], sh[2]
			x, w, bias, dout := randn(r, rows*in), randn(r, out*in), randn(r, out), randn(r, rows*out)
			for _, withBias := range []bool{true, false} {
				bi := bias
				if !withBias {
					bi = nil
				}
				want, got := make([]float32, rows*out), make([]float32, rows*out)
				ref.LinearForward(want, x, w, bi, rows, in, out)
				b.LinearForward(got, x, w, bi, rows, in, out)
				sync()
				check(t, fmt.Sprintf("forward %v bias=%v", sh, withBias), got, want)
			}
			din, dw, db := randn(r, rows*in), randn(r, out*in), randn(r, out)
			wdin, wdw, wdb := clone(din), clone(dw), clone(db)
			ref.LinearBackward(wdin, wdw, wdb, dout, x, w, rows, in, out)
			b.LinearBackward(din, dw, db, dout, x, w, rows, in, out)
			sync()
			check(t, fmt.Sprintf("din %v", sh), din, wdin)
			check(t, fmt.Sprintf("dweight %v", sh), dw, wdw)
			check(t, fmt.Sprintf("dbias %v", sh), db, wdb)
			// nil din and dbias are allowed.
			dw2, wdw2 := clone(dw), clone(dw)
			ref.LinearBackward(nil, wdw2, nil, dout, x, w, rows, in, out)
			b.LinearBackward(nil, dw2, nil, dout, x, w, rows, in, out)
			sync()
			check(t, fmt.Sprintf("dweight only %v", sh), dw2, wdw2)
		}
	})

	t.Run("LayerNorm", func(t *testing.T) {
		rows, cols := 37, 48
		x := randn(r, rows*cols)
		for i := range x[:cols] { // a row with a large mean and a constant row
			x[i] += 100
			x[cols+i] = 3
		}
		wo, wm, ws := make([]float32, rows*cols), make([]float32, rows), make([]float32, rows)
		go_, gm, gs := make([]float32, rows*cols), make([]float32, rows), make([]float32, rows)
		ref.LayerNormForward(wo, wm, ws, x, rows, cols)
		b.LayerNormForward(go_, gm, gs, x, rows, cols)
		sync()
		check(t, "out", go_, wo)
		check(t, "mean", gm, wm)
		check(t, "rstd", gs, ws)
		dout, din := randn(r, rows*cols), randn(r, rows*cols)
		wdin := clone(din)
		ref.LayerNormBackward(wdin, dout, wo, ws, rows, cols)
		b.LayerNormBackward(din, dout, wo, ws, rows, cols)
		sync()
		check(t, "din", din, wdin)
	})

	t.Run("Modulate", func(t *testing.T) {
		B, N, D, stride := 3, 19, 80, 6*80
		x, mod, dout := randn(r, B*N*D), randn(r, B*stride), randn(r, B*N*D)
		shift, scale := mod[D:], mod[2*D:]
		want, got := make([]float32, B*N*D), make([]float32, B*N*D)
		ref.ModulateForward(want, x, shift, scale, B, N, D, stride)
		b.ModulateForward(got, x, shift, scale, B, N, D, stride)
		sync()
		check(t, "out", got, want)
		din, dmod := randn(r, B*N*D), randn(r, B*stride)
		wdin, wdmod := clone(din), clone(dmod)
		ref.ModulateBackward(wdin, wdmod[D:], wdmod[2*D:], dout, x, scale, B, N, D, stride)
		b.ModulateBackward(din, dmod[D:], dmod[2*D:], dout, x, scale, B, N, D, stride)
		sync()
		check(t, "din", din, wdin)
		check(t, "dshift,dscale", dmod, wdmod)
	})

	t.Run("GatedResidual", func(t *testing.T) {
		B, N, D, stride := 2, 23, 72, 6*72
		h, y, mod, dh := randn(r, B*N*D), randn(r, B*N*D), randn(r, B*stride), randn(r, B*N*D)
		gate := mod[2*D:]
		want, got := clone(h), clone(h)
		ref.GatedResidualForward(want, y, gate, B, N, D, stride)
		b.GatedResidualForward(got, y, gate, B, N, D, stride)
		sync()
		check(t, "h", got, want)
		dy, dmod := randn(r, B*N*D), randn(r, B*stride)
		wdy, wdmod := clone(dy), clone(dmod)
		ref.GatedResidualBackward(wdy, wdmod[2*D:], dh, y, gate, B, N, D, stride)
		b.GatedResidualBackward(dy, dmod[2*D:], dh, y, gate, B, N, D, stride)
		sync()
		check(t, "dy", dy, wdy)
		check(t, "dgate", dmod, wdmod)
	})

	t.Run("Elementwise", func(t *testing.T) {
		n := 20000 // more than one chunk
		x, y, dout := randn(r, n), randn(r, n), randn(r, n)
		for i := range x[:200] { // the tails of GELU and SiLU
			x[i] *= 12
		}
		type unary struct {
			name string
			fwd  func(kernels.Backend, []float32)
			bwd  func(kernels.Backend, []float32)
		}
		ops := []unary{
			{"GELU", func(k kernels.Backend, o []float32) { k.GELUForward(o, x, n) }, func(k kernels.Backend, d []float32) { k.GELUBackward(d, dout, x, n) }},
			{"SiLU", func(k kernels.Backend, o []float32) { k.SiLUForward(o, x, n) }, func(k kernels.Backend, d []float32) { k.SiLUBackward(d, dout, x, n) }},
			{"Residual", func(k kernels.Backend, o []float32) { k.ResidualForward(o, x, y, n) }, func(k kernels.Backend, d []float32) { k.ResidualBackward(d, nil, dout, n) }},
			{"MSE", func(k kernels.Backend, o []float32) { o[0] = float32(k.MSEForward(x, y, n)) }, func(k kernels.Backend, d []float32) { k.MSEBackward(d, x, y, n, 0.7) }},
		}
		for _, op := range ops {
			want, got := make([]float32, n), make([]float32, n)
			op.fwd(ref, want)
			op.fwd(b, got)
			sync()
			check(t, op.name+" forward", got, want)
			d := randn(r, n)
			wd := clone(d)
			op.bwd(ref, wd)
			op.bwd(b, d)
			sync()
			check(t, op.name+" backward", d, wd)
		}
		d1, d2 := randn(r, n), randn(r, n)
		w1, w2 := clone(d1), clone(d2)
		ref.ResidualBackward(w1, w2, dout, n)
		b.ResidualBackward(d1, d2, dout, n)
		sync()
		check(t, "Residual backward din1", d1, w1)
		check(t, "Residual backward din2", d2, w2)
	})

	t.Run("Attention", func(t *testing.T) {
		type tcase struct {
			name             string
			B, H, Nq, Nk, dh int
			packed           bool // self-attention on a packed [B,N,3D] qkv buffer
			maskKind         string
		}
		cases := []tcase{
			{"self packed", 2, 3, 17, 17, 8, true, ""},
			{"cross masked", 3, 2, 13, 5, 16, false, "mixed"},
			{"cross all masked sample", 3, 2, 6, 4, 8, false, "allzero"},
		}
		for _, c := range cases {
			D := c.H * c.dh
			d := kernels.AttentionDims{B: c.B, Heads: c.H, Nq: c.Nq, Nk: c.Nk, HeadDim: c.dh, ORow: D, Scale: float32(1 / math.Sqrt(float64(c.dh)))}
			var qkv, q, k, v, kv []float32
			if c.packed {
				qkv = randn(r, c.B*c.Nq*3*D)
				q, k, v = qkv, qkv[D:], qkv[2*D:]
				d.QRow, d.KRow, d.VRow = 3*D, 3*D, 3*D
			} else {
				q, kv = randn(r, c.B*c.Nq*D), randn(r, c.B*c.Nk*2*D)
				k, v = kv, kv[D:]
				d.QRow, d.KRow, d.VRow = D, 2*D, 2*D
			}
			var mask []float32
			if c.maskKind != "" {
				mask = make([]float32, c.B*c.Nk)
				for i := range mask {
					mask[i] = 1
				}
				mask[c.Nk-1] = 0 // sample 0: last key padded
				if c.maskKind == "allzero" {
					clear(mask[c.Nk : 2*c.Nk]) // sample 1: every key padded
				}
				mask[2*c.Nk] = 0.5 // nonzero keeps
			}
			want, got := make([]float32, c.B*c.Nq*D), make([]float32, c.B*c.Nq*D)
			wl, gl := make([]float32, c.B*c.H*c.Nq), make([]float32, c.B*c.H*c.Nq)
			ref.AttentionForward(want, wl, q, k, v, mask, d)
			b.AttentionForward(got, gl, q, k, v, mask, d)
			sync()
			check(t, c.name+" out", got, want)
			if c.maskKind == "allzero" {
				for i, x := range got[c.Nq*D : 2*c.Nq*D] {
					if x != 0 {
						t.Fatalf("%s: all-masked sample output[%d] = %v, want 0", c.name, i, x)
					}
				}
			} else {
				check(t, c.name+" lse", gl, wl)
			}
			dout := randn(r, c.B*c.Nq*D)
			var gq, gk, gv, wq, wk, wv, gbuf, wbuf []float32
			if c.packed {
				gbuf = randn(r, len(qkv))
				wbuf = clone(gbuf)
				gq, gk, gv = gbuf, gbuf[D:], gbuf[2*D:]
				wq, wk, wv = wbuf, wbuf[D:], wbuf[2*D:]
			} else {
				gq, gbuf = randn(r, len(q)), randn(r, len(kv))
				wq, wbuf = clone(gq), clone(gbuf)
				gk, gv, wk, wv = gbuf, gbuf[D:], wbuf, wbuf[D:]
			}
			before := clone(gbuf)
			ref.AttentionBackward(wq, wk, wv, dout, q, k, v, mask, want, wl, d)
			b.AttentionBackward(gq, gk, gv, dout, q, k, v, mask, got, gl, d)
			sync()
			check(t, c.name+" dq", gq, wq)
			check(t, c.name+" dk,dv", gbuf, wbuf)
			if c.maskKind == "allzero" {
				s1 := before[c.Nk*2*D : 2*c.Nk*2*D]
				for i, x := range gbuf[c.Nk*2*D : 2*c.Nk*2*D] {
					if x != s1[i] {
						t.Fatalf("%s: all-masked sample got a k/v gradient", c.name)
					}
				}
			}
		}
	})

	t.Run("Patchify", func(t *testing.T) {
		for _, d := range []kernels.PatchDims{
			{B: 2, C: 3, F: 1, H: 4, W: 6, P: 2, PT: 1},
			{B: 2, C: 2, F: 4, H: 6, W: 4, P: 2, PT: 2},
			{B: 1, C: 5, F: 3, H: 3, W: 3, P: 3, PT: 3},
		} {
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			nx := d.B * d.C * d.F * d.H * d.W
			x := randn(r, nx)
			np := d.B * d.Tokens() * d.PatchLen()
			want, got := make([]float32, np), make([]float32, np)
			ref.PatchifyForward(want, x, d)
			b.PatchifyForward(got, x, d)
			sync()
			check(t, fmt.Sprintf("patchify %+v", d), got, want)
			dx, dout := randn(r, nx), randn(r, np)
			wdx := clone(dx)
			ref.PatchifyBackward(wdx, dout, d)
			b.PatchifyBackward(dx, dout, d)
			sync()
			check(t, fmt.Sprintf("patchify backward %+v", d), dx, wdx)
			wo, gout := make([]float32, nx), make([]float32, nx)
			ref.UnpatchifyForward(wo, want, d)
			b.UnpatchifyForward(gout, want, d)
			sync()
			check(t, fmt.Sprintf("unpatchify %+v", d), gout, wo)
			do, wdo := randn(r, np), []float32(nil)
			wdo = clone(do)
			ref.UnpatchifyBackward(wdo, x, d)
			b.UnpatchifyBackward(do, x, d)
			sync()
			check(t, fmt.Sprintf("unpatchify backward %+v", d), do, wdo)
		}
	})
}
