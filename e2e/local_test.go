package e2e

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/local"
	"github.com/fmtrain/fmtrain/telemetry"
)

// TestLocalRun is `fmctl local` on a tiny job: it generates the missing demo
// dataset, trains on two worker processes, and writes the loss plot and the
// sample grid.
func TestLocalRun(t *testing.T) {
	root := t.TempDir()
	spec := `name: tinydemo
seed: 1
device: cpu
min_workers: 2
max_workers: 2
model: {in_channels: 3, out_channels: 3, patch_size: 4, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 2, mlp_ratio: 2, text_dim: 8}
flow_matching: {adapter_type: simple}
data: {manifest: ` + filepath.Join(root, "runs", "tinydemo", "data", "manifest.json") + `}
step_scheduler: {global_batch_size: 8, local_batch_size: 4, max_steps: 6, ckpt_every_steps: 3, log_every_steps: 2}
checkpoint: {checkpoint_dir: ` + filepath.Join(root, "runs", "tinydemo", "checkpoints") + `}
sample: {num_steps: 4, per_prompt: 2}
`
	specPath := filepath.Join(root, "tiny.yaml")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	t.Setenv(workerEnv, "1") // the worker processes are this test binary
	var out bytes.Buffer
	res, err := local.Run(ctx, local.Options{
		SpecPath: specPath, RunsDir: filepath.Join(root, "runs"), Exe: os.Args[0], Out: &out,
	})
	if err != nil {
		t.Fatalf("local.Run: %v\n%s", err, out.String())
	}
	if res.Final == nil || res.Final.Kind != telemetry.EventFinished {
		t.Fatalf("final event %+v", res.Final)
	}
	for _, want := range []string{"generated the demo dataset", "step 6/6", "wrote " + res.LossPlot, "one row per caption"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, p := range []string{res.LossPlot, res.Samples} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s is not a PNG: %v", p, err)
		}
		f.Close()
	}
}
