package sample

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/safetensors"
	"github.com/fmtrain/fmtrain/train"
)

// oracleNet is the exact velocity of flows whose data is a single image per
// condition: x_t = (1−σ)·x0 + σ·ε has v = (x_t − x0)/σ, with x0 = targets[k]
// when the text's first value is k+1 and x0 = uncond for zero text. Euler
// integrates such straight paths exactly.
type oracleNet struct {
	C, T     int
	targets  [][]float32
	uncond   []float32
	sawMask  bool
	sawChans int
}

var _ train.Net = (*oracleNet)(nil)

func (o *oracleNet) Params() []float32                         { return nil }
func (o *oracleNet) Grads() []float32                          { return nil }
func (o *oracleNet) Layout() []checkpoint.Param                { return nil }
func (o *oracleNet) Backward(context.Context, []float32) error { return nil }
func (o *oracleNet) ZeroGrad()                                 {}
func (o *oracleNet) SetGradReadyHook(func(lo, hi int))         {}
func (o *oracleNet) OutChannels() int                          { return o.C }
func (o *oracleNet) ConfigJSON() ([]byte, error)               { return []byte("{}"), nil }

func (o *oracleNet) Forward(_ context.Context, in train.Input) ([]float32, error) {
	o.sawMask, o.sawChans = in.Mask != nil, in.C
	vol := o.C * in.F * in.H * in.W
	out := make([]float32, in.B*vol)
	for b := 0; b < in.B; b++ {
		x0 := o.uncond
		if k := int(in.Txt[b*in.S*len(in.Txt)/(in.B*in.S)]); k > 0 {
			x0 = o.targets[k-1]
		}
		sigma := in.T[b] / float32(o.T)
		xrow := in.X[b*in.C*in.F*in.H*in.W:]
		for i := 0; i < vol; i++ {
			out[b*vol+i] = (xrow[i] - x0[i]) / sigma
		}
	}
	return out, nil
}

func prompts(n, S, Dt int) *data.Prompts {
	p := &data.Prompts{S: S, Dt: Dt, Text: make([]float32, n*S*Dt), Mask: make([]float32, n*S)}
	for k := 0; k < n; k++ {
		p.Captions = append(p.Captions, string(rune('a'+k)))
		p.Text[k*S*Dt] = float32(k + 1)
		for s := 0; s < S; s++ {
			p.Mask[k*S+s] = 1
		}
	}
	return p
}

func TestEulerFollowsTheFlowWithGuidance(t *testing.T) {
	const C, H, W = 3, 2, 2
	vol := C * H * W
	net := &oracleNet{C: C, T: 1000, uncond: make([]float32, vol)}
	for k := 0; k < 2; k++ {
		tg := make([]float32, vol)
		for i := range tg {
			tg[i] = float32(k+1) * 0.1 * float32(i%5-2)
			net.uncond[i] = 0.05 * float32(i%3)
		}
		net.targets = append(net.targets, tg)
	}
	for _, g := range []float64{1, 3} {
		o := Options{Steps: 7, Guidance: g, FlowShift: 3, NumTrainTimesteps: 1000, Seed: 1, Adapter: "simple"}
		x, err := Euler(context.Background(), net, []int{C, H, W}, prompts(2, 4, 2), 3, o)
		if err != nil {
			t.Fatal(err)
		}
		if net.sawMask {
			t.Error("the simple adapter passes no mask, sampling must not either")
		}
		for s := 0; s < 6; s++ {
			k := s / 3
			for i := 0; i < vol; i++ {
				want := net.uncond[i] + float32(g)*(net.targets[k][i]-net.uncond[i])
				if d := math.Abs(float64(x[s*vol+i] - want)); d > 1e-5 {
					t.Fatalf("g=%v sample %d value %d: %v, want %v", g, s, i, x[s*vol+i], want)
				}
			}
		}
	}
}

func TestHunyuanInputs(t *testing.T) {
	net := &oracleNet{C: 2, T: 1000, uncond: make([]float32, 2*4), targets: [][]float32{make([]float32, 8)}}
	_, err := Euler(context.Background(), net, []int{2, 1, 2, 2}, prompts(1, 2, 2), 1,
		Options{Steps: 2, Guidance: 2, FlowShift: 1, NumTrainTimesteps: 1000, Adapter: "hunyuan"})
	if err != nil {
		t.Fatal(err)
	}
	if !net.sawMask || net.sawChans != 5 {
		t.Errorf("hunyuan inputs: mask %v, channels %d (want 2C+1 = 5)", net.sawMask, net.sawChans)
	}
}

func TestSigmas(t *testing.T) {
	s := Sigmas(4, 1)
	for i, want := range []float64{1, 0.75, 0.5, 0.25, 0} {
		if math.Abs(s[i]-want) > 1e-15 {
			t.Errorf("shift 1: sigma[%d] = %v, want %v", i, s[i], want)
		}
	}
	s = Sigmas(2, 3) // u = 0.5 → 1.5/2 = 0.75
	if s[0] != 1 || math.Abs(s[1]-0.75) > 1e-15 || s[2] != 0 {
		t.Errorf("shift 3: %v", s)
	}
}

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	caps := []string{"a red circle", "a blue cross"}
	lat := make([]float32, 4*3*4*4)
	if err := WriteLatents(filepath.Join(dir, "s.safetensors"), lat, []int{3, 4, 4}, Repeat(caps, 2)); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(filepath.Join(dir, "s.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, shape, err := f.Float32s("latents"); err != nil || len(shape) != 4 || shape[0] != 4 {
		t.Fatalf("latents %v %v", shape, err)
	}
	if err := WriteGrid(filepath.Join(dir, "g.png"), lat, []int{3, 4, 4}, caps, 2); err != nil {
		t.Fatal(err)
	}
	if err := WriteGrid(filepath.Join(dir, "g.png"), lat, []int{4, 4, 3}, caps, 2); err == nil {
		t.Error("a non-RGB grid was accepted")
	}
}
