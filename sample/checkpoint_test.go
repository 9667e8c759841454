package sample

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/train"
)

func TestFromCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if _, err := data.Synth(dir, data.SynthOptions{NumSamples: 16, NumShards: 1, Size: 8, TextLen: 4, TextDim: 8}); err != nil {
		t.Fatal(err)
	}
	spec, err := jobspec.Parse([]byte(fmt.Sprintf(`
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 1, mlp_ratio: 2, text_dim: 8}
data: {manifest: %q}
ema: {decay: 0.5}
step_scheduler: {global_batch_size: 4, local_batch_size: 4, max_steps: 2}
checkpoint: {checkpoint_dir: %q}
sample: {num_steps: 3, per_prompt: 2}
`, filepath.Join(dir, data.SynthManifestName), filepath.Join(dir, "ck"))))
	if err != nil {
		t.Fatal(err)
	}
	be, err := kernels.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := data.Open(spec.Data.Manifest, data.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	net, err := train.BuildNet(spec, be)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := train.New(context.Background(), train.Options{Spec: spec, Net: net, Data: ds, WriteCheckpoints: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, err := FromCheckpoint(context.Background(), Request{Checkpoint: res.Checkpoint}, be)
	if err != nil {
		t.Fatal(err)
	}
	nPrompts := len(data.SynthPromptCaptions())
	if len(out.Captions) != nPrompts || out.PerPrompt != 2 || !out.PixelSpace || len(out.Latents) != nPrompts*2*3*8*8 {
		t.Fatalf("result: %d captions, %d per prompt, pixel %v, %d values", len(out.Captions), out.PerPrompt, out.PixelSpace, len(out.Latents))
	}
	png := filepath.Join(dir, "grid.png")
	if err := out.WriteGrid(png); err != nil {
		t.Fatal(err)
	}
	if err := out.WriteLatents(filepath.Join(dir, "s.safetensors")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Fatalf("grid: %v", err)
	}
	if err := GridPNG(context.Background(), res.Checkpoint, spec, be, filepath.Join(dir, "grid2.png")); err != nil {
		t.Fatal(err)
	}
	if _, err := FromCheckpoint(context.Background(), Request{Checkpoint: res.Checkpoint, Weights: "best"}, be); err == nil {
		t.Error("accepted an unknown weights choice")
	}
}
