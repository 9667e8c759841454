package cuda

// An emulating fake device: device memory is host memory, cuBLAS calls are
// carried out with cuBLAS's column-major semantics, and each kernel runs as
// a plain-Go transcription of its .cu body. With it, the backend's host
// side (staging, pointer offsets, strides, the row-major↔column-major GEMM
// mapping, per-sample attention loops, two-pass reductions) is checked
// end to end against kernels.Reference and the FM-DiT reference vectors
// without a GPU. What it cannot check is the CUDA C itself compiling to the
// same arithmetic: NVRTC compiles it (make cuda-libs-check), and
// scripts/gpu-check.sh runs the same suites on a GPU.

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
	"github.com/fmtrain/fmtrain/model/modeltest"
)

// f32s views n floats at device address p (host memory in the emulator).
func f32s(p cu.DevicePtr, n int) []float32 {
	if p == 0 || n <= 0 {
		return nil
	}
	return unsafe.Slice((*float32)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), n)
}

func u16s(p cu.DevicePtr, n int) []uint16 {
	if p == 0 || n <= 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), n)
}

func f64s(p cu.DevicePtr, n int) []float64 {
	if p == 0 || n <= 0 {
		return nil
	}
	return unsafe.Slice((*float64)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), n)
}

// emuTensor is an emulated kernel's view of one tensor argument: float32,
// or bf16 when the kernel's st bit for it is set (fakeDevice.tensor).
type emuTensor struct {
	f []float32
	h []uint16
}

// ld is common.cu's fmt_ld.
func (t emuTensor) ld(i int) float32 {
	if t.h != nil {
		return bf16Float(t.h[i])
	}
	return t.f[i]
}

// st is common.cu's fmt_st.
func (t emuTensor) st(i int, v float32) {
	if t.h != nil {
		t.h[i] = bf16Bits(v)
		return
	}
	t.f[i] = v
}

// null reports a null pointer argument.
func (t emuTensor) null() bool { return t.f == nil && t.h == nil }

// stBit is FMT_BF: is tensor k of a kernel's st flags bf16?
func stBit(st, k int) bool { return st>>k&1 != 0 }

// bf16Bits is common.cu's fmt_bf16.
func bf16Bits(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16 | 0x40)
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func bf16Float(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// emuGemm is cublasGemmEx / cublasGemmStridedBatchedEx after Cublas().
func emuGemm(g cu.GemmOp) { emuGemmBias(g, nil) }

// emuGemmBias is emuGemm with cuBLASLt's bias epilogue: bias[j] (of the
// row-major output's column j) added to the fp32 result before C is
// written (rounded once when C is bf16).
func emuGemmBias(g cu.GemmOp, bias []float32) {
	cm := g.Cublas()
	m, n, k, lda, ldb := cm.M, cm.N, cm.K, cm.Lda, cm.Ldb
	elem := 4
	if g.AB == cu.R16BF {
		elem = 2
	}
	// operand reads one column-major operand as float32s.
	operand := func(p cu.DevicePtr, trans bool, rows, cols, ld int) func(r, c int) float32 {
		if trans {
			rows, cols = cols, rows
		}
		n := (cols-1)*ld + rows
		if g.AB == cu.R16BF {
			v := u16s(p, n)
			if trans {
				return func(r, c int) float32 { return bf16Float(v[c+r*ld]) }
			}
			return func(r, c int) float32 { return bf16Float(v[r+c*ld]) }
		}
		v := f32s(p, n)
		if trans {
			return func(r, c int) float32 { return v[c+r*ld] }
		}
		return func(r, c int) float32 { return v[r+c*ld] }
	}
	for bi := 0; bi < max(g.Batch, 1); bi++ {
		A := operand(cm.A+cu.DevicePtr(int64(bi)*cm.StrideA*int64(elem)), cm.TransA, m, k, lda)
		B := operand(cm.B+cu.DevicePtr(int64(bi)*cm.StrideB*int64(elem)), cm.TransB, k, n, ldb)
		celem := 4
		if g.CT == cu.R16BF {
			celem = 2
		}
		C := emuTensor{}
		if cp := g.C + cu.DevicePtr(int64(bi)*g.StrideC*int64(celem)); celem == 2 {
			C.h = u16s(cp, g.Ldc*(n-1)+m)
		} else {
			C.f = f32s(cp, g.Ldc*(n-1)+m)
		}
		for j := 0; j < n; j++ {
			for i := 0; i < m; i++ {
				var s float64
				for l := 0; l < k; l++ {
					s += float64(A(i, l)) * float64(B(l, j))
				}
				v := g.Alpha * float32(s)
				if g.Beta != 0 {
					v += g.Beta * C.ld(i+j*g.Ldc)
				}
				if bias != nil {
					v += bias[i] // column-major C's rows are the output's columns
				}
				C.st(i+j*g.Ldc, v)
			}
		}
	}
}

// emuKernel runs kernel name's .cu body over its whole index space (the
// fused attention kernels block by block and thread by thread, see
// emu_flash_test.go).
func emuKernel(f *fakeDevice, name string, cfg launchCfg, args []any) error {
	if strings.HasPrefix(name, "flash_attn_") {
		return emuFlash(f, name, cfg, args)
	}
	p := func(i int) cu.DevicePtr { return args[i].(cu.DevicePtr) }
	i32 := func(i int) int { return int(args[i].(int32)) }
	i64 := func(i int) int { return int(args[i].(int64)) }
	fl := func(i int) float32 { return args[i].(float32) }
	switch name {
	case "cast_bf16":
		n := i64(2)
		out, in := u16s(p(0), n), f32s(p(1), n)
		for i := range n {
			out[i] = bf16Bits(in[i])
		}
	case "accumulate":
		n := i64(2)
		dst, src := f32s(p(0), n), f32s(p(1), n)
		for i := range n {
			dst[i] += src[i]
		}
	case "residual_forward":
		n, st := i64(3), i32(4)
		out, a, b := f.tensor(p(0), stBit(st, 0)), f.tensor(p(1), stBit(st, 1)), f.tensor(p(2), stBit(st, 2))
		for i := range n {
			out.st(i, a.ld(i)+b.ld(i))
		}
	case "bias_store":
		rows, cols := i64(3), i32(4)
		out, c, bias := f.tensor(p(0), stBit(i32(5), 0)), f32s(p(1), rows*cols), f32s(p(2), cols)
		for i := range rows * cols {
			v := c[i]
			if bias != nil {
				v += bias[i%cols]
			}
			out.st(i, v)
		}
	case "bias_add":
		rows, cols := i64(2), i32(3)
		out, bias := f32s(p(0), rows*cols), f32s(p(1), cols)
		for i := range out {
			out[i] += bias[i%cols]
		}
	case "gelu_forward", "gelu_backward", "silu_forward", "silu_backward":
		// Forward (out, in, n, st); backward (din, dout, in, n, st).
		backward := name == "gelu_backward" || name == "silu_backward"
		nin := 1
		if backward {
			nin = 2
		}
		n, st := i64(nin+1), i32(nin+2)
		out, in := f.tensor(p(0), stBit(st, 0)), f.tensor(p(nin), stBit(st, nin))
		var dout []float32
		if backward {
			dout = f32s(p(1), n)
		}
		for i := range n {
			x := in.ld(i)
			switch name {
			case "gelu_forward":
				out.st(i, 0.5*x*(1+float32(math.Tanh(float64(0.7978845608028654*(x+0.044715*x*x*x))))))
			case "gelu_backward":
				t := float32(math.Tanh(float64(0.7978845608028654 * (x + 0.044715*x*x*x))))
				du := 0.7978845608028654 * (1 + 3*0.044715*x*x)
				out.f[i] += dout[i] * (0.5*(1+t) + 0.5*x*(1-t*t)*du)
			case "silu_forward":
				out.st(i, x/(1+float32(math.Exp(float64(-x)))))
			case "silu_backward":
				s := 1 / (1 + float32(math.Exp(float64(-x))))
				out.f[i] += dout[i] * s * (1 + x*(1-s))
			}
		}
	case "modulate_forward", "modulate_backward_input", "gated_residual_forward", "gated_residual_backward_input":
		// (out, a, [b,] vec..., B, N, D, stride[, st])
		nargs, st := len(args), 0
		if name == "modulate_forward" || name == "gated_residual_forward" {
			nargs, st = nargs-1, i32(nargs-1)
		}
		B, N, D, ms := i32(nargs-4), i32(nargs-3), i32(nargs-2), i32(nargs-1)
		total := B * N * D
		vecLen := (B-1)*ms + D
		out := f.tensor(p(0), stBit(st, 0))
		for i := range total {
			j, b := i%D, i/(N*D)
			switch name {
			case "modulate_forward":
				in, shift, scale := f.tensor(p(1), stBit(st, 1)), f32s(p(2), vecLen), f32s(p(3), vecLen)
				out.st(i, in.ld(i)*(1+scale[b*ms+j])+shift[b*ms+j])
			case "modulate_backward_input":
				dout, scale := f32s(p(1), total), f32s(p(2), vecLen)
				out.f[i] += dout[i] * (1 + scale[b*ms+j])
			case "gated_residual_forward":
				y, gate := f.tensor(p(1), stBit(st, 1)), f32s(p(2), vecLen)
				out.f[i] += gate[b*ms+j] * y.ld(i)
			case "gated_residual_backward_input":
				dh, gate := f32s(p(1), total), f32s(p(2), vecLen)
				out.f[i] += dh[i] * gate[b*ms+j]
			}
		}
	case "mse_backward":
		n := i64(3)
		d, pr, tg := f32s(p(0), n), f32s(p(1), n), f32s(p(2), n)
		for i := range n {
			d[i] += fl(4) * (pr[i] - tg[i])
		}
	case "adamw":
		n := i64(4)
		P, M, V, G := f32s(p(0), n), f32s(p(1), n), f32s(p(2), n), f32s(p(3), n)
		decay, b1, a1, b2, a2, bc2s, negStep, eps := fl(5), fl(6), fl(7), fl(8), fl(9), fl(10), fl(11), fl(12)
		for i := range n {
			g := G[i]
			pi := P[i] * decay
			mi := float32(float64(a1)*float64(g) + float64(M[i]*b1))
			vi := float32(float64(a2*g)*float64(g) + float64(V[i]*b2))
			denom := float32(math.Sqrt(float64(vi)))/bc2s + eps
			P[i] = pi + negStep*mi/denom
			M[i], V[i] = mi, vi
		}
	case "ema_update":
		n, d, a := i64(2), fl(3), fl(4)
		S, P := f32s(p(0), n), f32s(p(1), n)
		for i := range n {
			if d == 0 {
				S[i] = P[i]
			} else {
				S[i] = float32(d*S[i]) + float32(a*P[i])
			}
		}
	case "scale_matrix":
		rows, cols, ldc, beta := i64(1), i32(2), i32(3), fl(4)
		c := f32s(p(0), (rows-1)*ldc+cols)
		for r := range rows {
			for j := range cols {
				if beta == 0 {
					c[r*ldc+j] = 0
				} else {
					c[r*ldc+j] *= beta
				}
			}
		}
	case "scale_vector":
		for i, d := 0, f32s(p(0), i64(2)); i < len(d); i++ {
			d[i] *= fl(1)
		}
	case "colsum_partial":
		R, C, per, st := i32(3), i32(4), i32(5), i32(6)
		chunks, Z := cfg.grid.Y, cfg.grid.Z
		partial := f32s(p(0), Z*chunks*C)
		a := f.tensor(p(1), stBit(st, 1))
		b := f.tensor(p(2), stBit(st, 2))
		for z := range Z {
			for y := range chunks {
				for c := range C {
					// Thread ty sums rows r0+ty, r0+ty+8, …; then the 8 are added in order.
					var lanes [8]float32
					for r := y * per; r < min(R, y*per+per); r++ {
						v := a.ld((z*R+r)*C + c)
						if !b.null() {
							v *= b.ld((z*R+r)*C + c)
						}
						lanes[(r-y*per)%8] += v
					}
					var t float32
					for _, v := range lanes {
						t += v
					}
					partial[(z*chunks+y)*C+c] = t
				}
			}
		}
	case "colsum_finalize":
		chunks, C, Z, stride := i32(2), i32(3), i32(4), i32(5)
		dst, partial := f32s(p(0), (Z-1)*stride+C), f32s(p(1), Z*chunks*C)
		for z := range Z {
			for c := range C {
				var s float32
				for k := range chunks {
					s += partial[(z*chunks+k)*C+c]
				}
				dst[z*stride+c] += s
			}
		}
	case "layernorm_forward":
		rows, cols := i32(4), i32(5)
		out, mean, rstd, in := f.tensor(p(0), stBit(i32(6), 0)), f32s(p(1), rows), f32s(p(2), rows), f32s(p(3), rows*cols)
		for r := range rows {
			x := in[r*cols : (r+1)*cols]
			var s float32
			for _, v := range x {
				s += v
			}
			m := s / float32(cols)
			var vs float32
			for _, v := range x {
				vs += (v - m) * (v - m)
			}
			rs := 1 / float32(math.Sqrt(float64(vs/float32(cols)+1e-6)))
			for j, v := range x {
				out.st(r*cols+j, (v-m)*rs)
			}
			mean[r], rstd[r] = m, rs
		}
	case "layernorm_backward":
		rows, cols := i32(4), i32(5)
		din, dout, xhat, rstd := f32s(p(0), rows*cols), f32s(p(1), rows*cols), f.tensor(p(2), stBit(i32(6), 2)), f32s(p(3), rows)
		for r := range rows {
			var a, b float32
			for j := range cols {
				a += dout[r*cols+j]
				b += dout[r*cols+j] * xhat.ld(r*cols+j)
			}
			a /= float32(cols)
			b /= float32(cols)
			for j := range cols {
				din[r*cols+j] += rstd[r] * (dout[r*cols+j] - a - xhat.ld(r*cols+j)*b)
			}
		}
	case "mse_partial":
		n := i64(3)
		blocks := cfg.grid.X
		partial, pred := f64s(p(0), blocks), f32s(p(1), n)
		target := f32s(p(2), n)
		clear(partial)
		for i := range n {
			e := float64(pred[i])
			if target != nil {
				e -= float64(target[i])
			}
			partial[(i%(blocks*elemBlock))/elemBlock] += e * e
		}
	case "patchify_forward", "patchify_backward", "unpatchify_forward", "unpatchify_backward":
		B, C, F, H, W, P, PT := i32(2), i32(3), i32(4), i32(5), i32(6), i32(7), i32(8)
		N, K := (F/PT)*(H/P)*(W/P), C*PT*P*P
		total := B * N * K
		x, y := f32s(p(0), total), f32s(p(1), total)
		for i := range total {
			k, n, b := i%K, (i/K)%N, i/(N*K)
			hp, wp := H/P, W/P
			fi, hi, wi := n/(hp*wp), (n/wp)%hp, n%wp
			var c, kt, kh, kw int
			if name[0] == 'p' {
				kw, kh, kt, c = k%P, (k/P)%P, (k/(P*P))%PT, k/(P*P*PT)
			} else {
				c, kw, kh, kt = k%C, (k/C)%P, (k/(C*P))%P, k/(C*P*P)
			}
			li := (((b*C+c)*F+fi*PT+kt)*H+hi*P+kh)*W + wi*P + kw
			switch name {
			case "patchify_forward":
				x[i] = y[li]
			case "patchify_backward":
				x[li] += y[i]
			case "unpatchify_forward":
				x[li] = y[i]
			case "unpatchify_backward":
				x[i] += y[li]
			}
		}
	case "attn_softmax_forward", "attn_softmax_recompute":
		rows, nk, rps := i32(3), i32(4), i32(5)
		S, lse, mask := f32s(p(0), rows*nk), f32s(p(1), rows), f32s(p(2), (rows/rps)*nk)
		for r := range rows {
			keep := func(j int) bool { return mask == nil || mask[(r/rps)*nk+j] != 0 }
			s := S[r*nk : (r+1)*nk]
			if name == "attn_softmax_recompute" {
				for j := range s {
					if l := lse[r]; math.IsInf(float64(l), 1) || !keep(j) {
						s[j] = 0
					} else {
						s[j] = float32(math.Exp(float64(s[j] - l)))
					}
				}
				continue
			}
			mx := float32(math.Inf(-1))
			for j, v := range s {
				if keep(j) {
					mx = max(mx, v)
				}
			}
			if math.IsInf(float64(mx), -1) {
				clear(s)
				lse[r] = float32(math.Inf(1))
				continue
			}
			var sum float32
			for j := range s {
				e := float32(0)
				if keep(j) {
					e = float32(math.Exp(float64(s[j] - mx)))
				}
				s[j] = e
				sum += e
			}
			for j := range s {
				s[j] *= 1 / sum
			}
			lse[r] = mx + float32(math.Log(float64(sum)))
		}
	case "attn_rowdot":
		samples, heads, nq, hd, orow := i32(3), i32(4), i32(5), i32(6), i32(7)
		D := f32s(p(0), samples*heads*nq)
		span := (samples*nq-1)*orow + heads*hd
		dO, O := f32s(p(1), span), f.tensor(p(2), stBit(i32(8), 2))
		for r := range samples * heads * nq {
			sm, h, i := r/(heads*nq), (r/nq)%heads, r%nq
			base := (sm*nq+i)*orow + h*hd
			var s float32
			for c := range hd {
				s += dO[base+c] * O.ld(base+c)
			}
			D[r] = s
		}
	case "attn_softmax_backward":
		rows, nk, scale := i32(3), i32(4), fl(5)
		dP, P, D := f32s(p(0), rows*nk), f32s(p(1), rows*nk), f32s(p(2), rows)
		for i := range dP {
			dP[i] = P[i] * (dP[i] - D[i/nk]) * scale
		}
	default:
		return fmt.Errorf("emulator: no transcription of kernel %s", name)
	}
	return nil
}

// newEmuBackend is a backend over the emulating fake device, with the
// attention implementation mode.
func newEmuBackend(t *testing.T, bf16 bool, mode attnMode) *Backend {
	t.Helper()
	b, f := newFakeBackend(t, bf16)
	f.emulate = true
	b.attention = mode
	return b
}

// attnModes names the attention implementations for subtests.
var attnModes = map[string]attnMode{"fused": attnFused, "gemm": attnGEMM}

// TestEmulatedConformance runs kernels' conformance suite (every op against
// kernels.Reference at 2e-5) through the backend's real host code on the
// emulator, with either attention: with the suite's ordinary Go slices
// every argument is staged.
func TestEmulatedConformance(t *testing.T) {
	for name, mode := range attnModes {
		t.Run(name, func(t *testing.T) { kernelstest.Run(t, newEmuBackend(t, false, mode)) })
	}
}

// TestEmulatedReferenceVectors runs the FM-DiT reference vectors through
// model + backend on the emulator (managed buffers, used in place), with
// the GPU test's checks, with either attention: fp32 through
// model/modeltest, bf16 at its own tolerances.
func TestEmulatedReferenceVectors(t *testing.T) {
	for name, mode := range attnModes {
		t.Run(name+"/fp32", func(t *testing.T) {
			for _, path := range modeltest.VectorFiles(t) {
				modeltest.Check(t, modeltest.LoadCase(t, path), newEmuBackend(t, false, mode), nil)
			}
		})
		t.Run(name+"/bf16", func(t *testing.T) { checkBF16Vectors(t, func() *Backend { return newEmuBackend(t, true, mode) }) })
	}
}

// TestEmulatedAdamWMatchesOptim: the host scalars and the argument order
// of the fused AdamW, through the kernel's transcription.
func TestEmulatedAdamWMatchesOptim(t *testing.T) {
	checkAdamW(t, newEmuBackend(t, false, attnFused), 4096)
}

// TestEmulatedEMAMatchesOptim: the device EMA's scalars and arguments,
// through the kernel's transcription.
func TestEmulatedEMAMatchesOptim(t *testing.T) {
	checkEMA(t, newEmuBackend(t, false, attnFused), 4096)
}
