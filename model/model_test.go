package model

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/flow"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/safetensors"
)

func newTiny(t *testing.T) (*Model, Input, []float32) {
	t.Helper()
	cfg, params, in, target := tinyCase(5)
	be := kernels.NewCPU(kernels.CPUOptions{})
	t.Cleanup(func() { be.Close() })
	m, err := New(cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params(), params)
	return m, in, target
}

func TestConfigValidate(t *testing.T) {
	good := Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 32, Depth: 1, NumHeads: 4, MLPRatio: 4, TextDim: 8}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.HiddenSize = 40 }, "hidden_size (40) must be a multiple of 16"},
		{func(c *Config) { c.NumHeads = 3 }, "multiple of num_heads (3)"},
		{func(c *Config) { c.MLPRatio = 0.01 }, "mlp_ratio (0.01)"},
		{func(c *Config) { c.Depth = 0 }, "depth (0) must be positive"},
	} {
		bad := good
		c.mut(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want %q", err, c.want)
		}
	}
}

func TestParamTableMatchesDesign(t *testing.T) {
	cfg := Config{InChannels: 9, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 32, Depth: 2, NumHeads: 4, MLPRatio: 4, TextDim: 16}
	tab := ParamTable(cfg)
	byName := map[string][]int{}
	off := 0
	for _, p := range tab {
		if p.Offset != off {
			t.Fatalf("%s at offset %d, want %d (contiguous)", p.Name, p.Offset, off)
		}
		off += p.Size
		byName[p.Name] = p.Shape
	}
	for name, shape := range map[string][]int{
		"patch_embed.weight": {32, 36}, "t_embedder.fc1.weight": {32, 256}, "y_embedder.fc1.weight": {32, 16},
		"blocks.1.adaLN_modulation.weight": {192, 32}, "blocks.0.attn.qkv.bias": {96}, "blocks.1.cross_attn.kv.weight": {64, 32},
		"blocks.0.mlp.fc2.weight": {32, 128}, "final_layer.adaLN_modulation.weight": {64, 32}, "final_layer.linear.weight": {16, 32},
	} {
		if !slices.Equal(byName[name], shape) {
			t.Errorf("%s: shape %v, want %v", name, byName[name], shape)
		}
	}
	if NumParams(cfg) != off || len(tab) != 10+16*2+4 {
		t.Fatalf("NumParams %d (sum %d), %d tensors", NumParams(cfg), off, len(tab))
	}
}

func TestInitDiT(t *testing.T) {
	cfg := Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 32, Depth: 2, NumHeads: 4, MLPRatio: 4, TextDim: 16}
	a, b, c := make([]float32, NumParams(cfg)), make([]float32, NumParams(cfg)), make([]float32, NumParams(cfg))
	InitDiT(cfg, a, 42)
	InitDiT(cfg, b, 42)
	InitDiT(cfg, c, 43)
	if !slices.Equal(a, b) || slices.Equal(a, c) {
		t.Fatal("InitDiT is not a function of the seed")
	}
	for _, p := range ParamTable(cfg) {
		v := a[p.Offset : p.Offset+p.Size]
		var sum2, maxAbs float64
		for _, x := range v {
			sum2 += float64(x) * float64(x)
			maxAbs = math.Max(maxAbs, math.Abs(float64(x)))
		}
		std := math.Sqrt(sum2 / float64(len(v)))
		switch {
		case len(p.Shape) == 1 || strings.Contains(p.Name, "adaLN") || strings.HasPrefix(p.Name, "final_layer.linear"):
			if maxAbs != 0 {
				t.Errorf("%s should be zero", p.Name)
			}
		case strings.HasPrefix(p.Name, "t_embedder"):
			if math.Abs(std-0.02) > 0.003 {
				t.Errorf("%s: std %.4f, want ≈ 0.02", p.Name, std)
			}
		default:
			bound := math.Sqrt(6 / float64(p.Shape[0]+p.Shape[1]))
			if maxAbs > bound || math.Abs(std-bound/math.Sqrt(3)) > 0.15*bound/math.Sqrt(3) {
				t.Errorf("%s: max %.4f std %.4f, want Xavier-uniform bound %.4f", p.Name, maxAbs, std, bound)
			}
		}
	}
	// The untrained model predicts zeros.
	m, in, _ := newTiny(t)
	m.InitDiT(1)
	out, err := m.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != 0 {
			t.Fatalf("untrained output[%d] = %v, want 0", i, v)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	m, _, _ := newTiny(t)
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := Save(path, m.Config(), m.Params(), map[string]string{"step": "7"}); err != nil {
		t.Fatal(err)
	}
	cfg, params, meta, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != m.Config() || !slices.Equal(params, m.Params()) || meta["step"] != "7" {
		t.Fatalf("round trip changed the weights, config or metadata (%+v, %v)", cfg, meta)
	}
	if err := Save(path, m.Config(), m.Params(), map[string]string{"config": "x"}); err == nil {
		t.Fatal("a reserved metadata key should be refused")
	}
	// A file missing a parameter or with a wrong shape is refused by name.
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var drop, reshape []safetensors.Tensor
	for _, tt := range f.Tensors {
		if tt.Name != "blocks.1.mlp.fc1.bias" {
			drop = append(drop, tt)
		}
		if tt.Name == "final_layer.linear.bias" {
			tt.Shape = []int{1, tt.Shape[0]}
		}
		reshape = append(reshape, tt)
	}
	for _, c := range []struct {
		tensors []safetensors.Tensor
		want    string
	}{{drop, "blocks.1.mlp.fc1.bias missing"}, {reshape, "final_layer.linear.bias has shape"}} {
		bad := filepath.Join(t.TempDir(), "bad.safetensors")
		if err := safetensors.WriteFile(bad, c.tensors, f.Metadata); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := Load(bad); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.safetensors") {
			t.Errorf("Load = %v, want an error naming the file and %q", err, c.want)
		}
	}
}

// TestGradReadyHook checks the ranges cover the buffer exactly once, in
// reverse layer order, and that each range's values are final when handed out.
func TestGradReadyHook(t *testing.T) {
	m, in, target := newTiny(t)
	out, err := m.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	dOut := make([]float32, len(out))
	m.Backend().MSEBackward(dOut, out, target, len(out), 1)
	type snap struct {
		lo, hi int
		vals   []float32
	}
	var got []snap
	m.SetGradReadyHook(func(lo, hi int) { got = append(got, snap{lo, hi, slices.Clone(m.Grads()[lo:hi])}) })
	m.ZeroGrad()
	if err := m.Backward(context.Background(), dOut); err != nil {
		t.Fatal(err)
	}
	n := len(m.Grads())
	want := [][2]int{{m.P.FinalStart, n}}
	for l := m.Config().Depth - 1; l >= 0; l-- {
		want = append(want, m.P.BlockRange[l])
	}
	want = append(want, [2]int{0, m.P.EmbedEnd})
	if len(got) != len(want) {
		t.Fatalf("%d hook calls, want %d", len(got), len(want))
	}
	for i, s := range got {
		if s.lo != want[i][0] || s.hi != want[i][1] {
			t.Fatalf("hook call %d: [%d,%d), want %v", i, s.lo, s.hi, want[i])
		}
		if !slices.Equal(s.vals, m.Grads()[s.lo:s.hi]) {
			t.Fatalf("range [%d,%d) changed after it was handed out", s.lo, s.hi)
		}
	}
}

// TestBackwardAccumulates: two backward passes give twice the gradient.
func TestBackwardAccumulates(t *testing.T) {
	m, in, target := newTiny(t)
	ctx := context.Background()
	if err := m.Backward(ctx, nil); !errors.Is(err, ErrNoForward) {
		t.Fatalf("Backward before Forward: %v", err)
	}
	out, _ := m.Forward(ctx, in)
	dOut := make([]float32, len(out))
	m.Backend().MSEBackward(dOut, out, target, len(out), 1)
	m.ZeroGrad()
	if err := m.Backward(ctx, dOut); err != nil {
		t.Fatal(err)
	}
	once := slices.Clone(m.Grads())
	if err := m.Backward(ctx, dOut); err != nil {
		t.Fatal(err)
	}
	// A blocked GEMM adds each block's partial sum into the accumulated
	// gradient, so the second pass rounds differently from a doubling: the
	// error scales with the terms summed, so the bound is relative to the
	// largest gradient (a pass that overwrote instead of adding would be off
	// by the whole gradient).
	var largest float64
	for _, g := range once {
		largest = max(largest, math.Abs(float64(g)))
	}
	for i, g := range m.Grads() {
		if math.Abs(float64(g-2*once[i])) > 1e-6*largest {
			t.Fatalf("grad %d: %v after two passes, %v after one", i, g, once[i])
		}
	}
}

// TestShapesWithinReservation: a smaller batch after a larger one reuses
// the activations and matches a fresh model; a larger one is an error.
func TestShapesWithinReservation(t *testing.T) {
	m, in, _ := newTiny(t)
	ctx := context.Background()
	m.Reserve(in.B, 16, in.S)
	small := in
	small.B, small.F = 1, 2
	small.X = in.X[:len(in.X)/4]
	small.T, small.Txt, small.Mask = in.T[:1], in.Txt[:in.S*m.Config().TextDim], in.Mask[:in.S]
	if _, err := m.Forward(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := New(m.Config(), kernels.Reference{})
	if err != nil {
		t.Fatal(err)
	}
	copy(fresh.Params(), m.Params())
	want, err := fresh.Forward(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for i := range want {
		num += float64(got[i]-want[i]) * float64(got[i]-want[i])
		den += float64(want[i]) * float64(want[i])
	}
	if math.Sqrt(num/den) > 1e-5 {
		t.Fatalf("smaller batch differs from a fresh model: rel %.3g", math.Sqrt(num/den))
	}
	big := in
	big.S = in.S + 1
	big.Txt = make([]float32, in.B*big.S*m.Config().TextDim)
	big.Mask = nil
	if _, err := m.Forward(ctx, big); err == nil || !strings.Contains(err.Error(), "Reserve") {
		t.Fatalf("larger batch: %v, want an error pointing at Reserve", err)
	}
	bad := in
	bad.H = 3
	if _, err := m.Forward(ctx, bad); err == nil || !strings.Contains(err.Error(), "multiples of patch_size") {
		t.Fatalf("H=3: %v", err)
	}
}

// TestStepDoesNotAllocate: after the first step, forward + backward
// allocate nothing.
func TestStepDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race; covered by the plain go test run")
	}
	m, in, target := newTiny(t)
	ctx := context.Background()
	dOut := make([]float32, len(target))
	step := func() {
		out, err := m.Forward(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		m.Backend().MSEBackward(dOut, out, target, len(out), 1)
		m.ZeroGrad()
		if err := m.Backward(ctx, dOut); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("a training step allocates %.1f times, want 0", a)
	}
}

// TestFlowAdapters runs the model behind flow's simple adapter (video and
// image latents) and hunyuan adapter (i2v, in_channels = 2C+1), then
// backpropagates the pipeline's output gradient.
func TestFlowAdapters(t *testing.T) {
	const B, C, F, H, W, S, Dt = 2, 4, 3, 4, 4, 5, 8
	mk := func(shape ...int) *flow.Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(math.Sin(float64(i) * 0.37))
		}
		return flow.FromFloat32(flow.Float32, v, shape...)
	}
	for _, c := range []struct {
		adapter    string
		kwargs     map[string]any
		in         int
		latents    []int
		wantOutput []int
	}{
		{"simple", nil, C, []int{B, C, F, H, W}, []int{B, C, F, H, W}},
		{"simple", nil, C, []int{B, C, H, W}, []int{B, C, H, W}},
		{"hunyuan", map[string]any{"default_image_embed_shape": []any{2, 3}}, 2*C + 1, []int{B, C, F, H, W}, []int{B, C, F, H, W}},
	} {
		t.Run(c.adapter, func(t *testing.T) {
			cfg := Config{InChannels: c.in, OutChannels: C, PatchSize: 2, PatchSizeT: 1, HiddenSize: 32, Depth: 1, NumHeads: 2, MLPRatio: 2, TextDim: Dt}
			be := kernels.NewCPU(kernels.CPUOptions{})
			defer be.Close()
			m, err := New(cfg, be)
			if err != nil {
				t.Fatal(err)
			}
			m.InitDiT(1)
			// Make the zero-initialised layers live so gradients flow everywhere.
			for i := range m.Params() {
				m.Params()[i] += 0.01 * float32(math.Cos(float64(i)))
			}
			fc := flow.DefaultConfig()
			fc.AdapterType, fc.AdapterKwargs, fc.I2VProb = c.adapter, c.kwargs, 1
			p, err := flow.CreatePipeline(fc, flow.Options{RNG: flow.NewRNG(1, 0)})
			if err != nil {
				t.Fatal(err)
			}
			key := "video_latents"
			if len(c.latents) == 4 {
				key = "image_latents"
			}
			mask := flow.FromFloat32(flow.Float32, []float32{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, B, S)
			batch := flow.Batch{key: mk(c.latents...), "text_embeddings": mk(B, S, Dt), "text_mask": mask}
			opts := flow.DefaultStepOptions()
			opts.DType = flow.Float32
			fm := &FlowModel{Model: m}
			res, err := p.Step(context.Background(), fm, batch, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.ModelOutputs[0].Shape, c.wantOutput) || res.DModelOutputs == nil {
				t.Fatalf("output shape %v (want %v), output gradient %v", res.ModelOutputs[0].Shape, c.wantOutput, res.DModelOutputs)
			}
			if l := res.AverageWeightedLoss; !(l > 0) || math.IsInf(float64(l), 0) {
				t.Fatalf("loss %v", l)
			}
			m.ZeroGrad()
			if err := fm.Backward(context.Background(), res.DModelOutputs); err != nil {
				t.Fatal(err)
			}
			var norm float64
			for _, g := range m.Grads() {
				norm += float64(g) * float64(g)
			}
			if !(norm > 0) || math.IsNaN(norm) {
				t.Fatalf("gradient norm² %v", norm)
			}
		})
	}
}

// TestStepFLOPs counts configs.md's FLOPs by listing every GEMM of the
// tiny config by hand.
func TestStepFLOPs(t *testing.T) {
	c := Config{InChannels: 3, OutChannels: 2, PatchSize: 2, PatchSizeT: 2, HiddenSize: 16, Depth: 2, NumHeads: 2, MLPRatio: 2, TextDim: 8}
	const B, N, S = 2, 8, 3
	// (rows, in, out) of every linear layer.
	linears := [][3]float64{
		{B * N, 3 * 2 * 2 * 2, 16}, {B, 256, 16}, {B, 16, 16}, {B * S, 8, 16}, {B * S, 16, 16}, // embedders
		{B, 16, 32}, {B * N, 16, 2 * 2 * 2 * 2}, // final layer
	}
	for l := 0; l < c.Depth; l++ {
		linears = append(linears, [3]float64{B, 16, 96}, [3]float64{B * N, 16, 48}, [3]float64{B * N, 16, 16},
			[3]float64{B * N, 16, 16}, [3]float64{B * S, 16, 32}, [3]float64{B * N, 16, 16},
			[3]float64{B * N, 16, 32}, [3]float64{B * N, 32, 16})
	}
	var want float64
	for _, g := range linears {
		want += 3 * 2 * g[0] * g[1] * g[2]
	}
	// Attention: q·kᵀ and p·v per head, forward and twice that backward.
	want += float64(c.Depth) * 3 * 2 * (2*B*N*N*16 + 2*B*N*S*16)
	if got := StepFLOPs(c, B, N, S); got != want {
		t.Fatalf("StepFLOPs = %v, want %v", got, want)
	}
}
