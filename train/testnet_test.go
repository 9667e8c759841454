package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/fmtrain/fmtrain/checkpoint"
)

// linearNet is a small velocity model with an exact backward, for testing
// the loop without FM-DiT: per pixel, out[c] = Σ_k W[c,k]·x[k] +
// Σ_d U[c,d]·mean_s(txt[s,d]) + a[c]·t/1000 + bias[c].
type linearNet struct {
	cin, cout, dt int
	params, grads []float32
	hook          func(lo, hi int)
	// saved by Forward
	in Input
	tm []float32 // [B,Dt] mean text
}

var _ Net = (*linearNet)(nil)

func newLinearNet(cin, cout, dt int, seed uint64) *linearNet {
	n := cout*cin + cout*dt + 2*cout
	m := &linearNet{cin: cin, cout: cout, dt: dt, params: make([]float32, n), grads: make([]float32, n)}
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range m.params {
		m.params[i] = float32(r.NormFloat64() * 0.1)
	}
	return m
}

func (m *linearNet) Params() []float32 { return m.params }
func (m *linearNet) Grads() []float32  { return m.grads }
func (m *linearNet) Layout() []checkpoint.Param {
	c, k, d := m.cout, m.cin, m.dt
	return []checkpoint.Param{
		{Name: "w", Shape: []int{c, k}, Offset: 0},
		{Name: "u", Shape: []int{c, d}, Offset: c * k},
		{Name: "a", Shape: []int{c}, Offset: c*k + c*d},
		{Name: "bias", Shape: []int{c}, Offset: c*k + c*d + c},
	}
}
func (m *linearNet) OutChannels() int                    { return m.cout }
func (m *linearNet) ZeroGrad()                           { clear(m.grads) }
func (m *linearNet) SetGradReadyHook(f func(lo, hi int)) { m.hook = f }
func (m *linearNet) ConfigJSON() ([]byte, error) {
	return json.Marshal(map[string]int{"cin": m.cin, "cout": m.cout, "dt": m.dt})
}

func (m *linearNet) views(buf []float32) (w, u, a, bias []float32) {
	c, k, d := m.cout, m.cin, m.dt
	return buf[:c*k], buf[c*k : c*k+c*d], buf[c*k+c*d : c*k+c*d+c], buf[c*k+c*d+c:]
}

func (m *linearNet) Forward(_ context.Context, in Input) ([]float32, error) {
	if in.C != m.cin {
		return nil, fmt.Errorf("linearNet: %d channels, want %d", in.C, m.cin)
	}
	P := in.F * in.H * in.W
	m.in = in
	m.tm = make([]float32, in.B*m.dt)
	for b := 0; b < in.B; b++ {
		for s := 0; s < in.S; s++ {
			for d := 0; d < m.dt; d++ {
				m.tm[b*m.dt+d] += in.Txt[(b*in.S+s)*m.dt+d] / float32(in.S)
			}
		}
	}
	w, u, a, bias := m.views(m.params)
	out := make([]float32, in.B*m.cout*P)
	for b := 0; b < in.B; b++ {
		for c := 0; c < m.cout; c++ {
			cond := bias[c] + a[c]*in.T[b]/1000
			for d := 0; d < m.dt; d++ {
				cond += u[c*m.dt+d] * m.tm[b*m.dt+d]
			}
			o := out[(b*m.cout+c)*P : (b*m.cout+c+1)*P]
			for p := range o {
				v := cond
				for k := 0; k < m.cin; k++ {
					v += w[c*m.cin+k] * in.X[(b*m.cin+k)*P+p]
				}
				o[p] = v
			}
		}
	}
	return out, nil
}

func (m *linearNet) Backward(_ context.Context, dOut []float32) error {
	in := m.in
	P := in.F * in.H * in.W
	dw, du, da, dbias := m.views(m.grads)
	for b := 0; b < in.B; b++ {
		for c := 0; c < m.cout; c++ {
			g := dOut[(b*m.cout+c)*P : (b*m.cout+c+1)*P]
			var sum float32
			for p, v := range g {
				sum += v
				for k := 0; k < m.cin; k++ {
					dw[c*m.cin+k] += v * in.X[(b*m.cin+k)*P+p]
				}
			}
			dbias[c] += sum
			da[c] += sum * in.T[b] / 1000
			for d := 0; d < m.dt; d++ {
				du[c*m.dt+d] += sum * m.tm[b*m.dt+d]
			}
		}
	}
	if m.hook != nil {
		m.hook(0, len(m.grads))
	}
	return nil
}
