package model

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
)

// forward64 is an independent, plain float64 implementation of fm-dit.md
// (loops only, no kernels), used as the function whose finite differences
// check the float32 backward.
func forward64(c Config, p []float64, in Input, x []float64) []float64 {
	tab := map[string]ParamInfo{}
	for _, e := range ParamTable(c) {
		tab[e.Name] = e
	}
	w := func(name string) []float64 { e := tab[name]; return p[e.Offset : e.Offset+e.Size] }
	D, M, Dt, H := c.HiddenSize, c.MLPHidden(), c.TextDim, c.NumHeads
	dh := D / H
	pp, pt := c.PatchSize, c.PatchSizeT
	B, F, Hh, W, S := in.B, in.F, in.H, in.W, in.S
	Fp, Hp, Wp := F/pt, Hh/pp, W/pp
	N := Fp * Hp * Wp
	K := c.PatchLen()

	linear := func(x []float64, rows, nin int, name string, nout int) []float64 {
		wt, b := w(name+".weight"), w(name+".bias")
		y := make([]float64, rows*nout)
		for r := 0; r < rows; r++ {
			for o := 0; o < nout; o++ {
				s := b[o]
				for i := 0; i < nin; i++ {
					s += x[r*nin+i] * wt[o*nin+i]
				}
				y[r*nout+o] = s
			}
		}
		return y
	}
	ln := func(x []float64, rows int) []float64 {
		y := make([]float64, len(x))
		for r := 0; r < rows; r++ {
			row := x[r*D : (r+1)*D]
			var m, v float64
			for _, a := range row {
				m += a
			}
			m /= float64(D)
			for _, a := range row {
				v += (a - m) * (a - m)
			}
			v /= float64(D)
			for i, a := range row {
				y[r*D+i] = (a - m) / math.Sqrt(v+1e-6)
			}
		}
		return y
	}
	silu := func(x []float64) []float64 {
		y := make([]float64, len(x))
		for i, a := range x {
			y[i] = a / (1 + math.Exp(-a))
		}
		return y
	}
	gelu := func(x []float64) []float64 {
		y := make([]float64, len(x))
		for i, a := range x {
			y[i] = 0.5 * a * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(a+0.044715*a*a*a)))
		}
		return y
	}
	// modulated: x*(1+scale[b]) + shift[b], with chunk j of a [B,k·D] table.
	modulate := func(x, mod []float64, k, shiftChunk, scaleChunk int) []float64 {
		y := make([]float64, len(x))
		for b := 0; b < B; b++ {
			for n := 0; n < N; n++ {
				for i := 0; i < D; i++ {
					y[(b*N+n)*D+i] = x[(b*N+n)*D+i]*(1+mod[b*k*D+scaleChunk*D+i]) + mod[b*k*D+shiftChunk*D+i]
				}
			}
		}
		return y
	}
	// attention: q [B,Nq,qRow] at qOff, k/v [B,Nk,kvRow] at kOff/vOff.
	attention := func(q []float64, qRow, qOff int, kv []float64, kvRow, kOff, vOff, Nk int, mask []float32) []float64 {
		out := make([]float64, B*N*D)
		sc := make([]float64, Nk)
		for b := 0; b < B; b++ {
			for h := 0; h < H; h++ {
				for i := 0; i < N; i++ {
					mx := math.Inf(-1)
					for j := 0; j < Nk; j++ {
						if mask != nil && mask[b*Nk+j] == 0 {
							sc[j] = math.Inf(-1)
							continue
						}
						var s float64
						for d := 0; d < dh; d++ {
							s += q[(b*N+i)*qRow+qOff+h*dh+d] * kv[(b*Nk+j)*kvRow+kOff+h*dh+d]
						}
						sc[j] = s / math.Sqrt(float64(dh))
						mx = math.Max(mx, sc[j])
					}
					if math.IsInf(mx, -1) {
						continue
					}
					var sum float64
					for j := range sc {
						sc[j] = math.Exp(sc[j] - mx)
						sum += sc[j]
					}
					for j := 0; j < Nk; j++ {
						for d := 0; d < dh; d++ {
							out[(b*N+i)*D+h*dh+d] += sc[j] / sum * kv[(b*Nk+j)*kvRow+vOff+h*dh+d]
						}
					}
				}
			}
		}
		return out
	}

	// 1–2.
	patches := make([]float64, B*N*K)
	for b := 0; b < B; b++ {
		for fi := 0; fi < Fp; fi++ {
			for hi := 0; hi < Hp; hi++ {
				for wi := 0; wi < Wp; wi++ {
					n := (fi*Hp+hi)*Wp + wi
					for ch := 0; ch < c.InChannels; ch++ {
						for kt := 0; kt < pt; kt++ {
							for kh := 0; kh < pp; kh++ {
								for kw := 0; kw < pp; kw++ {
									k := ((ch*pt+kt)*pp+kh)*pp + kw
									patches[(b*N+n)*K+k] = x[(((b*c.InChannels+ch)*F+fi*pt+kt)*Hh+hi*pp+kh)*W+wi*pp+kw]
								}
							}
						}
					}
				}
			}
		}
	}
	h := linear(patches, B*N, K, "patch_embed", D)
	sincos := func(q, d int) []float64 {
		half := d / 2
		o := make([]float64, d)
		for i := 0; i < half; i++ {
			wv := math.Pow(10000, -float64(i)/float64(half))
			o[i], o[half+i] = math.Sin(float64(q)*wv), math.Cos(float64(q)*wv)
		}
		return o
	}
	for b := 0; b < B; b++ {
		for fi := 0; fi < Fp; fi++ {
			for hi := 0; hi < Hp; hi++ {
				for wi := 0; wi < Wp; wi++ {
					n := (fi*Hp+hi)*Wp + wi
					pos := append(append(sincos(fi, D/4), sincos(hi, 3*D/8)...), sincos(wi, 3*D/8)...)
					for i := range pos {
						h[(b*N+n)*D+i] += pos[i]
					}
				}
			}
		}
	}
	// 3.
	temb := make([]float64, B*TimestepDim)
	for b := 0; b < B; b++ {
		for i := 0; i < 128; i++ {
			a := float64(in.T[b]) * math.Exp(-math.Log(10000)*float64(i)/128)
			temb[b*256+i], temb[b*256+128+i] = math.Cos(a), math.Sin(a)
		}
	}
	cemb := linear(silu(linear(temb, B, 256, "t_embedder.fc1", D)), B, D, "t_embedder.fc2", D)
	sc := silu(cemb)
	// 4.
	txt := make([]float64, len(in.Txt))
	for i, v := range in.Txt {
		txt[i] = float64(v)
	}
	y := linear(gelu(linear(txt, B*S, Dt, "y_embedder.fc1", D)), B*S, D, "y_embedder.fc2", D)
	// 5.
	for l := 0; l < c.Depth; l++ {
		pre := "blocks." + itoa(l) + "."
		mod := linear(sc, B, D, pre+"adaLN_modulation", 6*D)
		gate := func(x []float64, chunk int) {
			for b := 0; b < B; b++ {
				for n := 0; n < N; n++ {
					for i := 0; i < D; i++ {
						h[(b*N+n)*D+i] += mod[b*6*D+chunk*D+i] * x[(b*N+n)*D+i]
					}
				}
			}
		}
		a := modulate(ln(h, B*N), mod, 6, 0, 1)
		qkv := linear(a, B*N, D, pre+"attn.qkv", 3*D)
		gate(linear(attention(qkv, 3*D, 0, qkv, 3*D, D, 2*D, N, nil), B*N, D, pre+"attn.proj", D), 2)
		q := linear(ln(h, B*N), B*N, D, pre+"cross_attn.q", D)
		kv := linear(y, B*S, D, pre+"cross_attn.kv", 2*D)
		ca := linear(attention(q, D, 0, kv, 2*D, 0, D, S, in.Mask), B*N, D, pre+"cross_attn.proj", D)
		for i := range h {
			h[i] += ca[i]
		}
		u := modulate(ln(h, B*N), mod, 6, 3, 4)
		gate(linear(gelu(linear(u, B*N, D, pre+"mlp.fc1", M)), B*N, M, pre+"mlp.fc2", D), 5)
	}
	// 6–7.
	fmod := linear(sc, B, D, "final_layer.adaLN_modulation", 2*D)
	Ko := c.OutPatchLen()
	o := linear(modulate(ln(h, B*N), fmod, 2, 0, 1), B*N, D, "final_layer.linear", Ko)
	out := make([]float64, B*c.OutChannels*F*Hh*W)
	for b := 0; b < B; b++ {
		for n := 0; n < N; n++ {
			fi, hi, wi := n/(Hp*Wp), (n/Wp)%Hp, n%Wp
			for kt := 0; kt < pt; kt++ {
				for kh := 0; kh < pp; kh++ {
					for kw := 0; kw < pp; kw++ {
						for ch := 0; ch < c.OutChannels; ch++ {
							out[(((b*c.OutChannels+ch)*F+fi*pt+kt)*Hh+hi*pp+kh)*W+wi*pp+kw] = o[(b*N+n)*Ko+((kt*pp+kh)*pp+kw)*c.OutChannels+ch]
						}
					}
				}
			}
		}
	}
	return out
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + itoa(i%10)
}

func mse64(out []float64, target []float32) float64 {
	var s float64
	for i, v := range out {
		d := v - float64(target[i])
		s += d * d
	}
	return s / float64(len(out))
}

// tinyCase is a small config with temporal patching (pt=2), a padded text
// token and random N(0, 0.3) weights, so every gradient is non-trivial.
func tinyCase(seed uint64) (Config, []float32, Input, []float32) {
	cfg := Config{InChannels: 3, OutChannels: 2, PatchSize: 2, PatchSizeT: 2, HiddenSize: 16, Depth: 2, NumHeads: 2, MLPRatio: 2, TextDim: 8}
	r := rand.New(rand.NewPCG(seed, 7))
	randn := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(s * r.NormFloat64())
		}
		return v
	}
	params := randn(NumParams(cfg), 0.3)
	in := Input{B: 2, F: 4, H: 4, W: 2, S: 3, T: []float32{17.25, 903.5}}
	in.X = randn(in.B*cfg.InChannels*in.F*in.H*in.W, 1)
	in.Txt = randn(in.B*in.S*cfg.TextDim, 1)
	in.Mask = []float32{1, 1, 1, 1, 1, 0}
	target := randn(in.B*cfg.OutChannels*in.F*in.H*in.W, 1)
	return cfg, params, in, target
}

// TestFiniteDifferenceGradients checks the float32 backward against central
// differences of the float64 forward, for a few elements of every
// parameter tensor and of x.
func TestFiniteDifferenceGradients(t *testing.T) {
	cfg, params, in, target := tinyCase(3)
	be := kernels.NewCPU(kernels.CPUOptions{})
	defer be.Close()
	m, err := New(cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params(), params)
	out, err := m.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	p64 := make([]float64, len(params))
	for i, v := range params {
		p64[i] = float64(v)
	}
	// The float64 forward agrees with the float32 one.
	x64 := make([]float64, len(in.X))
	for i, v := range in.X {
		x64[i] = float64(v)
	}
	ref := forward64(cfg, p64, in, x64)
	if e := relErr64(out, ref); e > 1e-5 {
		t.Fatalf("float32 forward vs float64 forward: rel %.3g", e)
	}
	dOut := make([]float32, len(out))
	be.MSEBackward(dOut, out, target, len(out), 1)
	m.ZeroGrad()
	if err := m.Backward(context.Background(), dOut); err != nil {
		t.Fatal(err)
	}

	const eps = 1e-5
	r := rand.New(rand.NewPCG(11, 13))
	fd := func(v []float64, i int, f func() float64) float64 {
		old := v[i]
		v[i] = old + eps
		lp := f()
		v[i] = old - eps
		lm := f()
		v[i] = old
		return (lp - lm) / (2 * eps)
	}
	loss := func() float64 { return mse64(forward64(cfg, p64, in, x64), target) }
	for _, p := range ParamTable(cfg) {
		var got, want []float64
		for s := 0; s < 4; s++ {
			i := p.Offset + r.IntN(p.Size)
			got = append(got, float64(m.Grads()[i]))
			want = append(want, fd(p64, i, loss))
		}
		checkGroup(t, "grad."+p.Name, got, want)
	}
	// grad.x
	dx, _ := m.InputGrads()
	var got, want []float64
	for s := 0; s < 6; s++ {
		i := r.IntN(len(in.X))
		got = append(got, float64(dx[i]))
		want = append(want, fd(x64, i, loss))
	}
	if e := relErr(got, want); e > 1e-3 {
		t.Errorf("grad.x: rel %.3g vs finite differences (got %v want %v)", e, got, want)
	}
}

// checkGroup compares sampled gradients with an absolute floor for the
// entries that are zero by construction (the attention key biases).
func checkGroup(t *testing.T, name string, got, want []float64) {
	t.Helper()
	var num, den float64
	for i := range got {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	if math.Sqrt(num) > 1e-3*math.Sqrt(den)+1e-7 {
		t.Errorf("%s: backward %v, finite differences %v", name, got, want)
	}
}

func relErr(got, want []float64) float64 {
	var num, den float64
	for i := range got {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

func relErr64(got []float32, want []float64) float64 {
	g := make([]float64, len(got))
	for i, v := range got {
		g[i] = float64(v)
	}
	return relErr(g, want)
}
