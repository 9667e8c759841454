package flow

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestStepInputErrors(t *testing.T) {
	p, err := New(DefaultConfig(), SimpleAdapter{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	model := &fixedOutputModel{shapes: func(c *ModelCall) [][]int { return [][]int{c.Tensor("hidden_states").Shape} }, nudgeO: -1}
	lat := NewTensor(Float32, 1, 2, 1, 2, 2)
	for _, c := range []struct {
		name  string
		batch Batch
		opts  StepOptions
		want  string
	}{
		{"no latents", Batch{"text_embeddings": NewTensor(Float32, 1, 2, 2)}, DefaultStepOptions(), "Batch must contain either 'video_latents' or 'image_latents'"},
		{"no text", Batch{"video_latents": lat}, DefaultStepOptions(), `simple: batch has no "text_embeddings"`},
		{"no dtype", Batch{"video_latents": lat, "text_embeddings": NewTensor(Float32, 1, 2, 2)}, StepOptions{}, "compute dtype"},
		{"data_type not a string", Batch{"video_latents": lat, "text_embeddings": NewTensor(Float32, 1, 2, 2), "data_type": 3}, DefaultStepOptions(), "data_type is int"},
		{"int latents", Batch{"video_latents": NewTensor(Int64, 1, 2, 2), "text_embeddings": NewTensor(Float32, 1, 2, 2)}, DefaultStepOptions(), "must be a float tensor"},
	} {
		if _, err := p.Step(context.Background(), model, c.batch, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
	// A model returning the wrong shape is an error, not a silent broadcast.
	bad := ModelFunc(func(context.Context, *ModelCall) ([]*Tensor, error) { return []*Tensor{NewTensor(Float32, 1, 2)}, nil })
	if _, err := p.Step(context.Background(), bad, Batch{"video_latents": lat, "text_embeddings": NewTensor(Float32, 1, 2, 2)}, DefaultStepOptions()); err == nil || !strings.Contains(err.Error(), "has shape [1 2]") {
		t.Errorf("wrong output shape: %v", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Step(cancelled, model, Batch{"video_latents": lat, "text_embeddings": NewTensor(Float32, 1, 2, 2)}, DefaultStepOptions()); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	boom := errors.New("out of memory")
	failing := ModelFunc(func(context.Context, *ModelCall) ([]*Tensor, error) { return nil, boom })
	if _, err := p.Step(context.Background(), failing, Batch{"video_latents": lat, "text_embeddings": NewTensor(Float32, 1, 2, 2)}, DefaultStepOptions()); !errors.Is(err, boom) {
		t.Errorf("model error not wrapped: %v", err)
	}
}

func TestAdapterInputErrors(t *testing.T) {
	rng := NewRNG(1, 0)
	ctx := func(x *Tensor, task string, batch Batch) *Context {
		return &Context{NoisyLatents: x, Latents: x, Timesteps: make([]float32, x.Shape[0]), Sigma: make([]float32, x.Shape[0]),
			TaskType: task, DataType: "video", DType: Float32, Batch: batch, RNG: rng}
	}
	text := Batch{"text_embeddings": NewTensor(Float32, 1, 2, 2)}
	for _, c := range []struct {
		adapter string
		ctx     *Context
		want    string
	}{
		{"flux", ctx(NewTensor(Float32, 1, 2, 1, 2, 2), TaskT2V, text), "expects 4D latents"},
		{"flux", ctx(NewTensor(Float32, 1, 2, 3, 2), TaskT2V, text), "must be even"},
		{"flux2", ctx(NewTensor(Float32, 1, 2, 1, 2, 2), TaskT2V, text), "expects 4D latents"},
		{"qwen_image", ctx(NewTensor(Float32, 1, 2, 2, 3), TaskT2V, text), "must be even"},
		{"hunyuan", ctx(NewTensor(Float32, 1, 2, 2, 2), TaskT2V, text), "hunyuan: latents [B,C,F,H,W]"},
		{"hunyuan", ctx(NewTensor(Float32, 1, 2, 1, 2, 2), "v2v", text), `unknown task_type "v2v"`},
		{"qwen_image_edit", ctx(NewTensor(Float32, 1, 2, 2, 2), TaskT2V, text), "context_latents"},
		{"qwen_image_edit", ctx(NewTensor(Float32, 1, 2, 2, 2), TaskT2V, Batch{"text_embeddings": NewTensor(Float32, 1, 2, 2),
			"context_latents": []*Tensor{NewTensor(Float32, 1, 3, 2, 2)}}), "context_latents[0] has shape [1 3 2 2]"},
		{"qwen_image_edit", ctx(NewTensor(Float32, 1, 2, 2, 2), TaskT2V, Batch{"text_embeddings": NewTensor(Float32, 1, 2, 2),
			"context_latents": []*Tensor{NewTensor(Float32, 1, 2, 2, 2)}}), "text_attention_mask must be [B,L]"},
		{"ltx2", ctx(NewTensor(Float32, 1, 2, 1, 2, 2), TaskT2V, text), "LTX2Adapter requires 'audio_latents'"},
	} {
		a, err := CreateAdapter(c.adapter, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.PrepareInputs(c.ctx); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.adapter, err, c.want)
		}
	}
	for _, c := range []struct {
		adapter string
		kwargs  map[string]any
		want    string
	}{
		{"flux", map[string]any{"guidance_scale": "high"}, "guidance_scale is string"},
		{"hunyuan", map[string]any{"default_image_embed_shape": []any{1}}, "two positive integers"},
		{"ltx2", map[string]any{"audio_weight": 1.0}, `unexpected keyword argument(s) ["audio_weight"]`},
		{"qwen_image", map[string]any{"use_guidance_embeds": 1}, "want true or false"},
	} {
		if _, err := CreateAdapter(c.adapter, c.kwargs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: error %v, want it to contain %q", c.adapter, c.kwargs, err, c.want)
		}
	}
}

func TestRegisterAdapterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("registering \"simple\" twice did not panic")
		}
	}()
	RegisterAdapter("simple", newSimpleAdapter)
}

func TestMinMax32(t *testing.T) {
	if lo, hi := minMax32([]float32{3, -1, 7, 0}); lo != -1 || hi != 7 {
		t.Errorf("minMax32 = %v, %v", lo, hi)
	}
	nan := float32(0)
	nan /= nan
	if lo, hi := minMax32([]float32{1, nan, 2}); lo == lo || hi == hi {
		t.Errorf("NaN not propagated: %v, %v", lo, hi)
	}
}
