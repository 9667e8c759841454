package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
)

// fmctl train end to end on a tiny job: the demo data is written when
// missing, and metrics, the loss plot and the sample grid come out.
func TestTrainCommand(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "data", data.SynthManifestName)
	spec, err := jobspec.Parse([]byte(fmt.Sprintf(`
name: tiny
device: cpu
model: {in_channels: 3, out_channels: 3, patch_size: 4, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 1, mlp_ratio: 2, text_dim: 8}
data: {manifest: %q}
step_scheduler: {global_batch_size: 8, local_batch_size: 4, max_steps: 4, log_every_steps: 2}
checkpoint: {checkpoint_dir: %q}
sample: {num_steps: 2, per_prompt: 1}
`, manifest, filepath.Join(dir, "ck"))))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = runTrain(context.Background(), spec, trainFlags{outDir: filepath.Join(dir, "ck"), samples: true, quiet: true}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"wrote the demo dataset", "step 2/4", "step 4/4", "done: 4 steps", "samples.png"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "ck", "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 {
		t.Fatalf("metrics.jsonl has %d lines", len(lines))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil || m["step"] != 4.0 || m["loss"] == nil {
		t.Errorf("last metrics line %s (%v)", lines[1], err)
	}
	for _, f := range []string{"loss.png", "samples.png", "step_00000004/header.json"} {
		if _, err := os.Stat(filepath.Join(dir, "ck", f)); err != nil {
			t.Error(err)
		}
	}

	// Resuming to step 6 keeps the earlier metrics lines and appends.
	spec.StepScheduler.MaxSteps = 6
	spec.Checkpoint.RestoreFrom = "latest"
	out.Reset()
	if err := runTrain(context.Background(), spec, trainFlags{outDir: filepath.Join(dir, "ck"), quiet: true}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "ck", "metrics.jsonl"))
	var steps []float64
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, m["step"].(float64))
	}
	if fmt.Sprint(steps) != "[2 4 6]" {
		t.Errorf("metrics steps after resume: %v", steps)
	}
}
