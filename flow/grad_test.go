package flow

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"testing"
)

// fixedOutputModel returns the same output tuple on every call (shaped from
// the first call by shapes), optionally with one element nudged, so a test
// can differentiate the step's loss with respect to the model output.
type fixedOutputModel struct {
	shapes func(*ModelCall) [][]int
	outs   []*Tensor
	nudgeO int // which output to nudge (-1: none)
	nudgeI int
	nudgeH float32
	reject []string
}

func (m *fixedOutputModel) Forward(_ context.Context, c *ModelCall) ([]*Tensor, error) {
	if m.outs == nil {
		g := NewRNG(99, 0)
		for _, s := range m.shapes(c) {
			m.outs = append(m.outs, FromFloat32(Float32, g.Randn(numel(s)), s...))
		}
	}
	out := make([]*Tensor, len(m.outs))
	for i, o := range m.outs {
		out[i] = o.Clone()
	}
	if m.nudgeO >= 0 {
		out[m.nudgeO].Data[m.nudgeI] += m.nudgeH
	}
	return out, nil
}

func (m *fixedOutputModel) AcceptsKwarg(name string) bool { return !slices.Contains(m.reject, name) }

// TestOutputGradientMatchesFiniteDifferences checks the training contract:
// StepResult.DModelOutputs is d(AverageWeightedLoss)/d(model outputs), for
// every adapter, through packing, apply_loss_mask and LTX-2's audio loss.
func TestOutputGradientMatchesFiniteDifferences(t *testing.T) {
	g := NewRNG(5, 0)
	randT := func(shape ...int) *Tensor { return FromFloat32(Float32, g.Randn(numel(shape)), shape...) }
	sameAs := func(name string) func(*ModelCall) [][]int {
		return func(c *ModelCall) [][]int { return [][]int{slices.Clone(c.Tensor(name).Shape)} }
	}
	mask := NewTensor(Float32, 2, 1, 2, 2, 4)
	for i := range mask.Data {
		mask.Data[i] = float32(i % 3)
	}
	for _, tc := range []struct {
		name    string
		adapter string
		kwargs  map[string]any
		mask    bool
		batch   Batch
		shapes  func(*ModelCall) [][]int
		reject  []string
	}{
		{name: "simple", adapter: "simple", batch: Batch{"video_latents": randT(2, 3, 2, 2, 4), "text_embeddings": randT(2, 3, 4)}, shapes: sameAs("hidden_states")},
		{name: "simple_masked", adapter: "simple", mask: true, batch: Batch{"video_latents": randT(2, 3, 2, 2, 4), "text_embeddings": randT(2, 3, 4), "loss_mask": mask}, shapes: sameAs("hidden_states")},
		{name: "hunyuan", adapter: "hunyuan", kwargs: map[string]any{"default_image_embed_shape": []any{2, 3}},
			batch: Batch{"video_latents": randT(2, 3, 2, 2, 2), "text_embeddings": randT(2, 3, 4)},
			shapes: func(c *ModelCall) [][]int {
				s := slices.Clone(c.Args[0].(*Tensor).Shape)
				s[1] = (s[1] - 1) / 2
				return [][]int{s}
			}},
		{name: "flux", adapter: "flux", batch: Batch{"image_latents": randT(2, 3, 4, 6), "text_embeddings": randT(2, 3, 4), "data_type": "image"}, shapes: sameAs("hidden_states")},
		{name: "flux2", adapter: "flux2", batch: Batch{"image_latents": randT(2, 5, 3, 2), "text_embeddings": randT(2, 3, 4), "data_type": "image"}, shapes: sameAs("hidden_states")},
		{name: "qwen_image", adapter: "qwen_image", batch: Batch{"image_latents": randT(2, 3, 4, 2), "text_embeddings": randT(2, 3, 4), "data_type": "image"}, shapes: sameAs("hidden_states")},
		{name: "qwen_image_edit", adapter: "qwen_image_edit", batch: Batch{"image_latents": randT(1, 2, 4, 4), "text_embeddings": randT(1, 3, 4), "data_type": "image",
			"text_attention_mask": NewTensor(Int64, 1, 3), "context_latents": []*Tensor{randT(1, 2, 2, 4)}}, shapes: sameAs("hidden_states")},
		{name: "ltx2", adapter: "ltx2", kwargs: map[string]any{"audio_loss_weight": 0.5},
			batch: Batch{"video_latents": randT(1, 3, 2, 2, 2), "text_embeddings": randT(1, 3, 4), "audio_latents": randT(1, 2, 3, 16),
				"audio_text_embeddings": randT(1, 3, 2), "text_mask": NewTensor(Int64, 1, 3)},
			shapes: func(c *ModelCall) [][]int {
				return [][]int{slices.Clone(c.Tensor("hidden_states").Shape), slices.Clone(c.Tensor("audio_hidden_states").Shape)}
			},
			reject: []string{"sigma", "audio_sigma", "fps", "audio_num_frames"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.AdapterType, cfg.AdapterKwargs, cfg.ApplyLossMask = tc.adapter, tc.kwargs, tc.mask
			cfg.CFGDropoutProb = 0
			rng := NewRNG(11, 3)
			state, err := rng.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			p, err := CreatePipeline(cfg, Options{RNG: rng, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			model := &fixedOutputModel{shapes: tc.shapes, nudgeO: -1, reject: tc.reject}
			opts := StepOptions{DType: Float32, CheckLoss: true}
			loss := func() float64 {
				if err := rng.UnmarshalBinary(state); err != nil { // the same draws every time
					t.Fatal(err)
				}
				res, err := p.Step(context.Background(), model, tc.batch, opts)
				if err != nil {
					t.Fatal(err)
				}
				return float64(res.AverageWeightedLoss)
			}
			loss()
			if err := rng.UnmarshalBinary(state); err != nil {
				t.Fatal(err)
			}
			res, err := p.Step(context.Background(), model, tc.batch, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.DModelOutputs) != len(model.outs) {
				t.Fatalf("%d output gradients for %d outputs", len(res.DModelOutputs), len(model.outs))
			}
			const h = 1e-2
			for o, d := range res.DModelOutputs {
				if !slices.Equal(d.Shape, model.outs[o].Shape) {
					t.Fatalf("output %d gradient shape %v, output %v", o, d.Shape, model.outs[o].Shape)
				}
				var maxAbs float64
				for _, v := range d.Data {
					maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
				}
				step := max(1, d.Numel()/13) // a spread of elements, first and last included
				for i := 0; i < d.Numel(); i += step {
					model.nudgeO, model.nudgeI, model.nudgeH = o, i, h
					up := loss()
					model.nudgeH = -h
					down := loss()
					model.nudgeO = -1
					fd := (up - down) / (2 * h)
					if math.Abs(fd-float64(d.Data[i])) > 2e-3*maxAbs+1e-6 {
						t.Errorf("output %d element %d: gradient %v, finite difference %v", o, i, d.Data[i], fd)
					}
				}
			}
		})
	}
}

func TestNoOutputGradientForCustomLoss(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UseLossWeighting = false
	p, err := New(cfg, constLossAdapter{c: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	model := &fixedOutputModel{shapes: func(c *ModelCall) [][]int { return [][]int{c.Tensor("hidden_states").Shape} }, nudgeO: -1}
	g := NewRNG(1, 1)
	batch := Batch{"video_latents": FromFloat32(Float32, g.Randn(8), 1, 2, 1, 2, 2), "text_embeddings": NewTensor(Float32, 1, 2, 2)}
	res, err := p.Step(context.Background(), model, batch, DefaultStepOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.DModelOutputs != nil || res.AverageWeightedLoss != 1 {
		t.Errorf("custom loss: gradients %v, loss %v", res.DModelOutputs, res.AverageWeightedLoss)
	}
}
