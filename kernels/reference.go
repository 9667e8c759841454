package kernels

import "math"

// Reference is the slow, plain-Go, single-goroutine implementation of every
// op: the definition that the fast backends are tested against (llm.c's
// _cpu functions). It is registered as "reference". Its reductions use
// float64 accumulators.
type Reference struct{}

var _ Backend = Reference{}

func init() {
	Register("reference", func() (Backend, error) { return Reference{}, nil })
}

// Name implements Backend.
func (Reference) Name() string { return "reference" }

// Gemm implements Backend.
func (Reference) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var sum float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				sum += float64(av) * float64(bv)
			}
			r := alpha * float32(sum)
			if beta != 0 {
				r += beta * c[i*ldc+j]
			}
			c[i*ldc+j] = r
		}
	}
}

// GemmBatched implements Backend.
func (r Reference) GemmBatched(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	for i := 0; i < batch; i++ {
		r.Gemm(transA, transB, m, n, k, alpha, a[i*strideA:], lda, b[i*strideB:], ldb, beta, c[i*strideC:], ldc)
	}
}

// LinearForward implements Backend.
func (r Reference) LinearForward(out, in, weight, bias []float32, rows, inDim, outDim int) {
	r.Gemm(false, true, rows, outDim, inDim, 1, in, inDim, weight, inDim, 0, out, outDim)
	if bias != nil {
		for i := 0; i < rows; i++ {
			for o := 0; o < outDim; o++ {
				out[i*outDim+o] += bias[o]
			}
		}
	}
}

// LinearBackward implements Backend.
func (r Reference) LinearBackward(din, dweight, dbias, dout, in, weight []float32, rows, inDim, outDim int) {
	if din != nil {
		r.Gemm(false, false, rows, inDim, outDim, 1, dout, outDim, weight, inDim, 1, din, inDim)
	}
	r.Gemm(true, false, outDim, inDim, rows, 1, dout, outDim, in, inDim, 1, dweight, inDim)
	if dbias != nil {
		for o := 0; o < outDim; o++ {
			var s float64
			for i := 0; i < rows; i++ {
				s += float64(dout[i*outDim+o])
			}
			dbias[o] += float32(s)
		}
	}
}

// LayerNormForward implements Backend.
func (Reference) LayerNormForward(out, mean, rstd, in []float32, rows, cols int) {
	for i := 0; i < rows; i++ {
		x := in[i*cols : (i+1)*cols]
		var m float64
		for _, v := range x {
			m += float64(v)
		}
		m /= float64(cols)
		var variance float64
		for _, v := range x {
			d := float64(v) - m
			variance += d * d
		}
		variance /= float64(cols)
		s := 1 / math.Sqrt(variance+LayerNormEps)
		o := out[i*cols : (i+1)*cols]
		for j, v := range x {
			o[j] = float32((float64(v) - m) * s)
		}
		mean[i], rstd[i] = float32(m), float32(s)
	}
}

// LayerNormBackward implements Backend.
func (Reference) LayerNormBackward(din, dout, out, rstd []float32, rows, cols int) {
	for i := 0; i < rows; i++ {
		xhat := out[i*cols : (i+1)*cols]
		dy := dout[i*cols : (i+1)*cols]
		s := float64(rstd[i])
		var sumDy, sumDyXhat float64
		for j, x := range xhat {
			sumDy += float64(dy[j])
			sumDyXhat += float64(dy[j]) * float64(x)
		}
		sumDy /= float64(cols)
		sumDyXhat /= float64(cols)
		dx := din[i*cols : (i+1)*cols]
		for j, x := range xhat {
			dx[j] += float32(s * (float64(dy[j]) - sumDy - float64(x)*sumDyXhat))
		}
	}
}

// ModulateForward implements Backend.
func (Reference) ModulateForward(out, in, shift, scale []float32, B, N, D, modStride int) {
	for b := 0; b < B; b++ {
		for n := 0; n < N; n++ {
			row := (b*N + n) * D
			for j := 0; j < D; j++ {
				out[row+j] = in[row+j]*(1+scale[b*modStride+j]) + shift[b*modStride+j]
			}
		}
	}
}

// ModulateBackward implements Backend.
func (Reference) ModulateBackward(din, dshift, dscale, dout, in, scale []float32, B, N, D, modStride int) {
	for b := 0; b < B; b++ {
		for j := 0; j < D; j++ {
			var sShift, sScale float64
			for n := 0; n < N; n++ {
				idx := (b*N+n)*D + j
				sShift += float64(dout[idx])
				sScale += float64(dout[idx]) * float64(in[idx])
				din[idx] += dout[idx] * (1 + scale[b*modStride+j])
			}
			dshift[b*modStride+j] += float32(sShift)
			dscale[b*modStride+j] += float32(sScale)
		}
	}
}

// GatedResidualForward implements Backend.
func (Reference) GatedResidualForward(h, y, gate []float32, B, N, D, gateStride int) {
	for b := 0; b < B; b++ {
		for n := 0; n < N; n++ {
			row := (b*N + n) * D
			for j := 0; j < D; j++ {
				h[row+j] += gate[b*gateStride+j] * y[row+j]
			}
		}
	}
}

// GatedResidualBackward implements Backend.
func (Reference) GatedResidualBackward(dy, dgate, dh, y, gate []float32, B, N, D, gateStride int) {
	for b := 0; b < B; b++ {
		for j := 0; j < D; j++ {
			var s float64
			for n := 0; n < N; n++ {
				idx := (b*N+n)*D + j
				s += float64(dh[idx]) * float64(y[idx])
				dy[idx] += dh[idx] * gate[b*gateStride+j]
			}
			dgate[b*gateStride+j] += float32(s)
		}
	}
}

// ResidualForward implements Backend.
func (Reference) ResidualForward(out, in1, in2 []float32, n int) {
	for i := 0; i < n; i++ {
		out[i] = in1[i] + in2[i]
	}
}

// ResidualBackward implements Backend.
func (Reference) ResidualBackward(din1, din2, dout []float32, n int) {
	for i := 0; i < n; i++ {
		if din1 != nil {
			din1[i] += dout[i]
		}
		if din2 != nil {
			din2[i] += dout[i]
		}
	}
}

// geluCoef is sqrt(2/pi).
var geluCoef = math.Sqrt(2 / math.Pi)

// GELUForward implements Backend.
func (Reference) GELUForward(out, in []float32, n int) {
	for i := 0; i < n; i++ {
		x := float64(in[i])
		out[i] = float32(0.5 * x * (1 + math.Tanh(geluCoef*(x+0.044715*x*x*x))))
	}
}

// GELUBackward implements Backend.
func (Reference) GELUBackward(din, dout, in []float32, n int) {
	for i := 0; i < n; i++ {
		x := float64(in[i])
		u := geluCoef * (x + 0.044715*x*x*x)
		t := math.Tanh(u)
		du := geluCoef * (1 + 3*0.044715*x*x)
		g := 0.5*(1+t) + 0.5*x*(1-t*t)*du
		din[i] += float32(float64(dout[i]) * g)
	}
}

// SiLUForward implements Backend.
func (Reference) SiLUForward(out, in []float32, n int) {
	for i := 0; i < n; i++ {
		x := float64(in[i])
		out[i] = float32(x / (1 + math.Exp(-x)))
	}
}

// SiLUBackward implements Backend.
func (Reference) SiLUBackward(din, dout, in []float32, n int) {
	for i := 0; i < n; i++ {
		x := float64(in[i])
		s := 1 / (1 + math.Exp(-x))
		din[i] += float32(float64(dout[i]) * s * (1 + x*(1-s)))
	}
}

// maskKeeps reports whether key j of sample b is visible.
func maskKeeps(mask []float32, b, nk, j int) bool {
	return mask == nil || mask[b*nk+j] != 0
}

// AttentionForward implements Backend.
func (Reference) AttentionForward(out, lse, q, k, v, mask []float32, d AttentionDims) {
	scores := make([]float64, d.Nk)
	for b := 0; b < d.B; b++ {
		for h := 0; h < d.Heads; h++ {
			for i := 0; i < d.Nq; i++ {
				qi := q[b*d.Nq*d.QRow+i*d.QRow+h*d.HeadDim:]
				oi := out[b*d.Nq*d.ORow+i*d.ORow+h*d.HeadDim:]
				mx := math.Inf(-1)
				for j := 0; j < d.Nk; j++ {
					if !maskKeeps(mask, b, d.Nk, j) {
						continue
					}
					kj := k[b*d.Nk*d.KRow+j*d.KRow+h*d.HeadDim:]
					var s float64
					for c := 0; c < d.HeadDim; c++ {
						s += float64(qi[c]) * float64(kj[c])
					}
					scores[j] = s * float64(d.Scale)
					mx = math.Max(mx, scores[j])
				}
				for c := 0; c < d.HeadDim; c++ {
					oi[c] = 0
				}
				li := (b*d.Heads+h)*d.Nq + i
				if math.IsInf(mx, -1) { // every key masked
					lse[li] = float32(math.Inf(1))
					continue
				}
				var sum float64
				for j := 0; j < d.Nk; j++ {
					if maskKeeps(mask, b, d.Nk, j) {
						scores[j] = math.Exp(scores[j] - mx)
						sum += scores[j]
					}
				}
				acc := make([]float64, d.HeadDim)
				for j := 0; j < d.Nk; j++ {
					if !maskKeeps(mask, b, d.Nk, j) {
						continue
					}
					vj := v[b*d.Nk*d.VRow+j*d.VRow+h*d.HeadDim:]
					p := scores[j] / sum
					for c := 0; c < d.HeadDim; c++ {
						acc[c] += p * float64(vj[c])
					}
				}
				for c := 0; c < d.HeadDim; c++ {
					oi[c] = float32(acc[c])
				}
				lse[li] = float32(mx + math.Log(sum))
			}
		}
	}
}

// AttentionBackward implements Backend.
func (Reference) AttentionBackward(dq, dk, dv, dout, q, k, v, mask, out, lse []float32, d AttentionDims) {
	p := make([]float64, d.Nk)
	dp := make([]float64, d.Nk)
	for b := 0; b < d.B; b++ {
		for h := 0; h < d.Heads; h++ {
			for i := 0; i < d.Nq; i++ {
				l := float64(lse[(b*d.Heads+h)*d.Nq+i])
				if math.IsInf(l, 1) {
					continue // fully masked: no gradient
				}
				qi := q[b*d.Nq*d.QRow+i*d.QRow+h*d.HeadDim:]
				doi := dout[b*d.Nq*d.ORow+i*d.ORow+h*d.HeadDim:]
				oi := out[b*d.Nq*d.ORow+i*d.ORow+h*d.HeadDim:]
				var rowDot float64 // sum_c dout·out = sum_j p_j dp_j
				for c := 0; c < d.HeadDim; c++ {
					rowDot += float64(doi[c]) * float64(oi[c])
				}
				for j := 0; j < d.Nk; j++ {
					p[j], dp[j] = 0, 0
					if !maskKeeps(mask, b, d.Nk, j) {
						continue
					}
					kj := k[b*d.Nk*d.KRow+j*d.KRow+h*d.HeadDim:]
					vj := v[b*d.Nk*d.VRow+j*d.VRow+h*d.HeadDim:]
					var s, g float64
					for c := 0; c < d.HeadDim; c++ {
						s += float64(qi[c]) * float64(kj[c])
						g += float64(doi[c]) * float64(vj[c])
					}
					p[j] = math.Exp(s*float64(d.Scale) - l)
					dp[j] = g
				}
				dqi := dq[b*d.Nq*d.QRow+i*d.QRow+h*d.HeadDim:]
				for j := 0; j < d.Nk; j++ {
					if p[j] == 0 {
						continue
					}
					ds := p[j] * (dp[j] - rowDot) * float64(d.Scale)
					kj := k[b*d.Nk*d.KRow+j*d.KRow+h*d.HeadDim:]
					dkj := dk[b*d.Nk*d.KRow+j*d.KRow+h*d.HeadDim:]
					dvj := dv[b*d.Nk*d.VRow+j*d.VRow+h*d.HeadDim:]
					for c := 0; c < d.HeadDim; c++ {
						dqi[c] += float32(ds * float64(kj[c]))
						dkj[c] += float32(ds * float64(qi[c]))
						dvj[c] += float32(p[j] * float64(doi[c]))
					}
				}
			}
		}
	}
}

// patchIndex returns, for patch feature k of token n of sample b, the index
// of the latent element it holds (fm-dit.md step 1).
func patchIndex(d PatchDims, b, n, k int) int {
	hp, wp := d.H/d.P, d.W/d.P
	fi, hi, wi := n/(hp*wp), (n/wp)%hp, n%wp
	kw := k % d.P
	kh := (k / d.P) % d.P
	kt := (k / (d.P * d.P)) % d.PT
	c := k / (d.P * d.P * d.PT)
	return (((b*d.C+c)*d.F+fi*d.PT+kt)*d.H+hi*d.P+kh)*d.W + wi*d.P + kw
}

// unpatchIndex returns, for output feature k (channel last) of token n of
// sample b, the index of the latent element it lands on (fm-dit.md step 7).
func unpatchIndex(d PatchDims, b, n, k int) int {
	hp, wp := d.H/d.P, d.W/d.P
	fi, hi, wi := n/(hp*wp), (n/wp)%hp, n%wp
	c := k % d.C
	kw := (k / d.C) % d.P
	kh := (k / (d.C * d.P)) % d.P
	kt := k / (d.C * d.P * d.P)
	return (((b*d.C+c)*d.F+fi*d.PT+kt)*d.H+hi*d.P+kh)*d.W + wi*d.P + kw
}

// PatchifyForward implements Backend.
func (Reference) PatchifyForward(out, x []float32, d PatchDims) {
	N, K := d.Tokens(), d.PatchLen()
	for b := 0; b < d.B; b++ {
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				out[(b*N+n)*K+k] = x[patchIndex(d, b, n, k)]
			}
		}
	}
}

// PatchifyBackward implements Backend.
func (Reference) PatchifyBackward(dx, dout []float32, d PatchDims) {
	N, K := d.Tokens(), d.PatchLen()
	for b := 0; b < d.B; b++ {
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				dx[patchIndex(d, b, n, k)] += dout[(b*N+n)*K+k]
			}
		}
	}
}

// UnpatchifyForward implements Backend.
func (Reference) UnpatchifyForward(out, o []float32, d PatchDims) {
	N, K := d.Tokens(), d.PatchLen()
	for b := 0; b < d.B; b++ {
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				out[unpatchIndex(d, b, n, k)] = o[(b*N+n)*K+k]
			}
		}
	}
}

// UnpatchifyBackward implements Backend.
func (Reference) UnpatchifyBackward(do, dout []float32, d PatchDims) {
	N, K := d.Tokens(), d.PatchLen()
	for b := 0; b < d.B; b++ {
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				do[(b*N+n)*K+k] += dout[unpatchIndex(d, b, n, k)]
			}
		}
	}
}

// MSEForward implements Backend.
func (Reference) MSEForward(pred, target []float32, n int) float64 {
	var s float64
	for i := 0; i < n; i++ {
		e := float64(pred[i]) - float64(target[i])
		s += e * e
	}
	return s / float64(n)
}

// MSEBackward implements Backend.
func (Reference) MSEBackward(dpred, pred, target []float32, n int, scale float32) {
	f := 2 * float64(scale) / float64(n)
	for i := 0; i < n; i++ {
		dpred[i] += float32(f * (float64(pred[i]) - float64(target[i])))
	}
}
