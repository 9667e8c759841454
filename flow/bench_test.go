package flow

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
)

// BenchmarkStep measures the pipeline's own cost per step (sampling, casts,
// interpolation, adapter packing, loss, metrics, output gradient) around a
// model that only copies its input, for a video batch [B,16,F,H,W].
func BenchmarkStep(b *testing.B) {
	for _, tc := range []struct {
		adapter string
		dtype   DType
		shape   []int
		key     string
	}{
		{"simple", Float32, []int{4, 16, 8, 32, 32}, "video_latents"},
		{"simple", BFloat16, []int{4, 16, 8, 32, 32}, "video_latents"},
		{"flux", Float32, []int{4, 16, 64, 64}, "image_latents"},
	} {
		b.Run(fmt.Sprintf("%s/%v/%v", tc.adapter, tc.dtype, tc.shape), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.AdapterType = tc.adapter
			p, err := CreatePipeline(cfg, Options{RNG: NewRNG(1, 0), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			g := NewRNG(2, 0)
			batch := Batch{tc.key: FromFloat32(Float32, g.Randn(numel(tc.shape)), tc.shape...), "text_embeddings": FromFloat32(Float32, g.Randn(tc.shape[0]*77*64), tc.shape[0], 77, 64)}
			model := ModelFunc(func(_ context.Context, c *ModelCall) ([]*Tensor, error) {
				return []*Tensor{c.Tensor("hidden_states").Clone()}, nil
			})
			opts := StepOptions{DType: tc.dtype, CollectMetrics: true, CheckLoss: true}
			b.SetBytes(int64(4 * numel(tc.shape)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Step(context.Background(), model, batch, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMinMax compares the metrics' one-pass min/max with slices.Min +
// slices.Max on one latent batch's worth of values (run both in one sitting).
func BenchmarkMinMax(b *testing.B) {
	x := NewRNG(3, 0).Randn(4 * 16 * 8 * 32 * 32)
	b.Run("minMax32", func(b *testing.B) {
		for b.Loop() {
			minMax32(x)
		}
	})
	b.Run("slices.Min+Max", func(b *testing.B) {
		for b.Loop() {
			_, _ = slices.Min(x), slices.Max(x)
		}
	})
}
