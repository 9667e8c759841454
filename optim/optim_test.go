package optim

import (
	"encoding/json"
	"math"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/fmtrain/fmtrain/jobspec"
)

// golden.json is written by testdata/gen_golden.py from PyTorch (see there).
type golden struct {
	Torch string `json:"torch"`
	AdamW []struct {
		Name        string      `json:"name"`
		Betas       [2]float64  `json:"betas"`
		Eps         float64     `json:"eps"`
		WeightDecay float64     `json:"weight_decay"`
		LRs         []float64   `json:"lrs"`
		Params0     []float32   `json:"params0"`
		Grads       [][]float32 `json:"grads"`
		Params      []float32   `json:"params"`
		M           []float32   `json:"m"`
		V           []float32   `json:"v"`
	} `json:"adamw"`
	Clip []struct {
		Name    string    `json:"name"`
		MaxNorm float64   `json:"max_norm"`
		Grads0  []float32 `json:"grads0"`
		Grads   []float32 `json:"grads"`
		Norm    float64   `json:"norm"`
	} `json:"clip"`
}

func loadGolden(t *testing.T) golden {
	t.Helper()
	raw, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.AdamW) == 0 || len(g.Clip) == 0 {
		t.Fatal("golden.json has no cases")
	}
	return g
}

// ulps is the distance between two float32 values in units in the last place.
func ulps(a, b float32) int64 {
	ia, ib := int64(math.Float32bits(a)), int64(math.Float32bits(b))
	if ia < 0x80000000 != (ib < 0x80000000) {
		return math.MaxInt32 // different signs: only equal if both are zeros
	}
	d := ia - ib
	if d < 0 {
		d = -d
	}
	return d
}

func checkClose(t *testing.T, what string, got, want []float32, maxULP int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := int64(0)
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		if u := ulps(got[i], want[i]); u > worst {
			worst = u
			if u > maxULP {
				t.Errorf("%s[%d] = %v, torch %v (%d ulp)", what, i, got[i], want[i], u)
			}
		}
	}
	t.Logf("%s: worst %d ulp", what, worst)
}

func TestAdamWMatchesTorch(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.AdamW {
		t.Run(c.Name, func(t *testing.T) {
			p := append([]float32(nil), c.Params0...)
			o := NewAdamW(len(p), c.Betas[0], c.Betas[1], c.Eps, c.WeightDecay)
			for s, gr := range c.Grads {
				if err := o.Update(p, gr, c.LRs[s]); err != nil {
					t.Fatal(err)
				}
			}
			if o.Step != int64(len(c.Grads)) {
				t.Errorf("Step = %d", o.Step)
			}
			checkClose(t, "m", o.M, c.M, 0)
			checkClose(t, "v", o.V, c.V, 0)
			checkClose(t, "params", p, c.Params, 0)
		})
	}
}

func TestAdamWLengthMismatch(t *testing.T) {
	o := NewAdamW(3, 0.9, 0.999, 1e-8, 0)
	if err := o.Update(make([]float32, 3), make([]float32, 2), 1e-3); err == nil {
		t.Fatal("accepted grads of the wrong length")
	}
}

// One step by hand in float64: with zero moments the first AdamW step moves
// every weight by lr·sign(g) (up to eps) after the decoupled decay.
func TestAdamWFirstStepByHand(t *testing.T) {
	p := []float32{1, -2, 0.5}
	gr := []float32{0.3, -4, 1e-3}
	o := NewAdamW(3, 0.9, 0.999, 1e-8, 0.1)
	lr := 0.01
	if err := o.Update(p, gr, lr); err != nil {
		t.Fatal(err)
	}
	for i, p0 := range []float64{1, -2, 0.5} {
		g := float64(gr[i])
		m, v := 0.1*g, 0.001*g*g
		want := p0*(1-lr*0.1) - lr/0.1*m/(math.Sqrt(v)/math.Sqrt(0.001)+1e-8)
		if math.Abs(float64(p[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("p[%d] = %v, want %v", i, p[i], want)
		}
	}
}

func TestClipGradNormMatchesTorch(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Clip {
		t.Run(c.Name, func(t *testing.T) {
			gr := append([]float32(nil), c.Grads0...)
			norm := ClipGradNorm(gr, c.MaxNorm)
			if math.Abs(norm-c.Norm) > 2e-7*c.Norm {
				t.Errorf("pre-clip norm %v, torch %v", norm, c.Norm)
			}
			checkClose(t, "grads", gr, c.Grads, 2)
		})
	}
}

func TestClipDisabledOnlyMeasures(t *testing.T) {
	gr := []float32{3, 4}
	if n := ClipGradNorm(gr, 0); n != 5 || gr[0] != 3 || gr[1] != 4 {
		t.Errorf("norm %v, grads %v", n, gr)
	}
}

func TestConstantSchedule(t *testing.T) {
	s, err := NewSchedule(nil, 3e-4, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int{0, 50, 1000} {
		if s.LR(step) != 3e-4 {
			t.Errorf("LR(%d) = %v", step, s.LR(step))
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestParamScheduleByHand(t *testing.T) {
	const lr, minLR = 1e-3, 1e-5
	cases := []struct {
		name  string
		cfg   jobspec.LRScheduler
		total int
		want  map[int]float64
	}{
		{"cosine with warm-up", jobspec.LRScheduler{LRDecayStyle: "cosine", LRWarmupSteps: ptr(10.0), InitLR: ptr(0.0), MinLR: ptr(minLR)}, 110,
			map[int]float64{0: 0, 5: lr / 2, 10: lr, 60: (lr + minLR) / 2, 110: minLR, 111: minLR, 500: minLR,
				35: minLR + 0.5*(math.Cos(math.Pi*0.25)+1)*(lr-minLR)}},
		{"linear", jobspec.LRScheduler{LRDecayStyle: "linear", LRWarmupSteps: ptr(0.0), MinLR: ptr(0.0)}, 100,
			map[int]float64{0: lr, 25: 0.75 * lr, 100: 0}},
		{"constant after warm-up", jobspec.LRScheduler{LRDecayStyle: "constant", LRWarmupSteps: ptr(4.0)}, 100,
			map[int]float64{0: 0.1 * lr, 2: 0.1*lr + 0.45*lr, 4: lr, 99: lr, 1000: lr}},
		// NeMo defaults: warm-up total/10 = 20 from 0.1·lr, min 0.01·lr.
		{"defaults", jobspec.LRScheduler{}, 200,
			map[int]float64{0: 0.1 * lr, 20: lr, 110: (lr + 0.01*lr) / 2, 200: 0.01 * lr}},
		// A warm-up fraction is a share of the total steps.
		{"warm-up fraction", jobspec.LRScheduler{LRDecayStyle: "cosine", LRWarmupSteps: ptr(0.25), InitLR: ptr(0.0)}, 40,
			map[int]float64{5: lr / 2, 10: lr}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewSchedule(&c.cfg, lr, c.total)
			if err != nil {
				t.Fatal(err)
			}
			for step, want := range c.want {
				if got := s.LR(step); math.Abs(got-want) > 1e-15 {
					t.Errorf("LR(%d) = %v, want %v", step, got, want)
				}
			}
		})
	}
}

func TestScheduleRejects(t *testing.T) {
	if _, err := NewSchedule(&jobspec.LRScheduler{LRDecayStyle: "cosine"}, 1e-3, 0); err == nil {
		t.Error("accepted a scheduled run without a length")
	}
	if _, err := NewSchedule(&jobspec.LRScheduler{LRDecayStyle: "wsd"}, 1e-3, 10); err == nil {
		t.Error("accepted an unknown style")
	}
	if _, err := NewSchedule(&jobspec.LRScheduler{MinLR: ptr(1.0)}, 1e-3, 10); err == nil {
		t.Error("accepted min_lr > lr")
	}
}

func TestEMA(t *testing.T) {
	p := []float32{1, 2}
	e := NewEMA(p, 0.5, 1)
	p[0], p[1] = 3, 4
	if err := e.Update(p, 1); err != nil { // before start: tracks the weights
		t.Fatal(err)
	}
	if e.Shadow[0] != 3 || e.Shadow[1] != 4 {
		t.Fatalf("shadow %v", e.Shadow)
	}
	p[0], p[1] = 5, 0
	if err := e.Update(p, 2); err != nil {
		t.Fatal(err)
	}
	if e.Shadow[0] != 4 || e.Shadow[1] != 2 {
		t.Fatalf("shadow %v, want [4 2]", e.Shadow)
	}
	if err := e.Update(p[:1], 3); err == nil {
		t.Error("an update with the wrong length was accepted")
	}
}

// The chunked parallel update gives exactly the sequential loop's values,
// and the norm does not depend on the core count.
func TestParallelMatchesSequential(t *testing.T) {
	n := 3*chunk + 5
	p, g := make([]float32, n), make([]float32, n)
	for i := range p {
		p[i], g[i] = float32(i%13)/13-0.5, float32(i%7)/7-0.3
	}
	seq := append([]float32(nil), p...)
	o := NewAdamW(n, 0.9, 0.999, 1e-8, 0.01)
	if err := o.Update(p, g, 1e-3); err != nil {
		t.Fatal(err)
	}
	m, v := make([]float32, n), make([]float32, n)
	bc2 := float32(math.Sqrt(1 - 0.999))
	update(seq, g, m, v, float32(1-1e-3*0.01), 0.9, float32(1-0.9), 0.999, float32(1-0.999), bc2, float32(-(1e-3 / (1 - 0.9))), 1e-8)
	if !slices.Equal(p, seq) || !slices.Equal(o.M, m) || !slices.Equal(o.V, v) {
		t.Fatal("parallel AdamW differs from the sequential loop")
	}
	prev := runtime.GOMAXPROCS(1)
	one := GlobalNorm(g)
	runtime.GOMAXPROCS(prev)
	if many := GlobalNorm(g); many != one {
		t.Fatalf("norm %v on one core, %v on %d", one, many, prev)
	}
}

// hostDevice is an in-memory "device": the host loops behind the optional
// interfaces, counting calls.
type hostDevice struct{ adamw, sums, scales, allocs int }

func (d *hostDevice) AdamW(params, grads, m, v []float32, lr, beta1, beta2, eps, wd float64, step int64) error {
	d.adamw++
	o := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: wd, M: m, V: v, Step: step - 1}
	return o.Update(params, grads, lr)
}
func (d *hostDevice) SumSquares(buf []float32) float64 {
	d.sums++
	n := GlobalNorm(buf)
	return n * n
}
func (d *hostDevice) Scale(buf []float32, s float32) {
	d.scales++
	for i := range buf {
		buf[i] *= s
	}
}
func (d *hostDevice) Alloc(n int) []float32 { d.allocs++; return make([]float32, n) }

func TestDevicePath(t *testing.T) {
	g := loadGolden(t).AdamW[1]
	p := append([]float32(nil), g.Params0...)
	o := NewAdamW(len(p), g.Betas[0], g.Betas[1], g.Eps, g.WeightDecay)
	dev := &hostDevice{}
	o.OnDevice(dev, dev)
	for s, gr := range g.Grads {
		gr = append([]float32(nil), gr...)
		ClipGradNormOn(dev, gr, 1e9)
		if err := o.Update(p, gr, g.LRs[s]); err != nil {
			t.Fatal(err)
		}
	}
	if dev.adamw != len(g.Grads) || dev.allocs != 2 || dev.sums != len(g.Grads) {
		t.Errorf("device calls: %+v", dev)
	}
	checkClose(t, "params", p, g.Params, 0)
	checkClose(t, "m", o.M, g.M, 0)
	gr := []float32{3, 4}
	if n := ClipGradNormOn(dev, gr, 1); n != 5 || dev.scales != 1 || math.Abs(float64(gr[0])-0.6) > 1e-6 {
		t.Errorf("device clip: norm %v grads %v scales %d", n, gr, dev.scales)
	}
}
