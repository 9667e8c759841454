package jobspec

import (
	"strings"
	"testing"
)

const validSpec = `
name: demo
seed: 7
device: cpu
min_workers: 1
max_workers: 2
model:
  in_channels: 3
  out_channels: 3
  patch_size: 2
  patch_size_t: 1
  hidden_size: 64
  depth: 2
  num_heads: 4
  mlp_ratio: 4
  text_dim: 32
flow_matching:
  adapter_type: simple
  timestep_sampling: logit_normal
  flow_shift: 1.0
  adapter_kwargs: {anything: [1, 2]}
data:
  manifest: data/manifest.json
optimizer:
  lr: 3.0e-4
  betas: [0.9, 0.95]
lr_scheduler:
  lr_decay_style: cosine
  lr_warmup_steps: 20
  min_lr: 1.0e-5
step_scheduler:
  global_batch_size: 32
  local_batch_size: 16
  max_steps: 100
  ckpt_every_steps: 50
`

func TestParseValid(t *testing.T) {
	s, err := Parse([]byte(validSpec))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "demo" || s.Seed != 7 || s.Device != "cpu" || s.MaxWorkers != 2 {
		t.Errorf("top level: %+v", s)
	}
	if s.Model.DiT.HiddenSize != 64 || s.Model.DiT.MLPRatio != 4 || s.Model.DiT.TextDim != 32 {
		t.Errorf("model: %+v", s.Model)
	}
	if s.FlowMatching.FlowShift != 1 || s.FlowMatching.NumTrainTimesteps != 1000 {
		t.Errorf("flow_matching: explicit value or default lost: %+v", s.FlowMatching)
	}
	if s.Optimizer.LR != 3e-4 || s.Optimizer.Betas[1] != 0.95 || s.Optimizer.Eps != 1e-8 {
		t.Errorf("optimizer: %+v", s.Optimizer)
	}
	if s.LRScheduler == nil || *s.LRScheduler.LRWarmupSteps != 20 || *s.LRScheduler.MinLR != 1e-5 ||
		s.LRScheduler.InitLR != nil || s.LRScheduler.LRDecaySteps != nil {
		t.Errorf("lr_scheduler: %+v", s.LRScheduler)
	}
	if s.StepScheduler.MaxSteps != 100 || s.StepScheduler.LogEverySteps != 10 {
		t.Errorf("step_scheduler: %+v", s.StepScheduler)
	}
	// Marshal gives YAML that parses back to the same spec.
	out, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of Marshal output: %v\n%s", err, out)
	}
	out2, _ := s2.Marshal()
	if string(out) != string(out2) {
		t.Errorf("Marshal is not stable:\n%s\n---\n%s", out, out2)
	}
}

func TestParseUnknownKeys(t *testing.T) {
	cases := []struct{ edit, want string }{
		{"name: demo", `unknown key "nmae"`},
		{"  lr: 3.0e-4", `unknown key "optimizer.learning_rate"`},
		{"  hidden_size: 64", `unknown key "model.hiden_size"`},
		{"  flow_shift: 1.0", `unknown key "flow_matching.flow_shfit"`},
		{"  max_steps: 100", `unknown key "step_scheduler.max_step"`},
	}
	replacements := map[string]string{
		"name: demo":        "nmae: demo",
		"  lr: 3.0e-4":      "  learning_rate: 3.0e-4",
		"  hidden_size: 64": "  hiden_size: 64\n  hidden_size: 64",
		"  flow_shift: 1.0": "  flow_shfit: 1.0",
		"  max_steps: 100":  "  max_step: 100\n  max_steps: 100",
	}
	for _, c := range cases {
		doc := strings.Replace(validSpec, c.edit, replacements[c.edit], 1)
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %s", c.edit, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: error does not name the line: %v", c.edit, err)
		}
	}
}

func TestParseInvalidValues(t *testing.T) {
	cases := []struct{ from, to, want string }{
		{"min_workers: 1", "min_workers: 4", "min_workers (4) cannot exceed max_workers (2)"},
		{"min_workers: 1", "min_workers: 1\nmin_workers: 2", `mapping key "min_workers" already defined`},
		{"device: cpu", "device: tpu", `device ("tpu") must be one of [auto cpu cuda]`},
		{"  lr: 3.0e-4", "  lr: -1", "optimizer.lr (-1) must be a finite number > 0"},
		{"  betas: [0.9, 0.95]", "  betas: [0.9, 1.5]", "optimizer.betas[1] (1.5) must be in [0, 1)"},
		{"  betas: [0.9, 0.95]", "  betas: [0.9]", "optimizer.betas ([0.9]) must have two values"},
		{"  lr_decay_style: cosine", "  lr_decay_style: exp", `lr_scheduler.lr_decay_style ("exp") must be one of`},
		{"  min_lr: 1.0e-5", "  min_lr: 1.0", "lr_scheduler.min_lr (1) cannot exceed optimizer.lr (0.0003)"},
		{"  lr_warmup_steps: 20", "  lr_warmup_steps: 2.5", "lr_scheduler.lr_warmup_steps (2.5) must be a whole number"},
		{"  local_batch_size: 16", "  local_batch_size: 5", "step_scheduler.global_batch_size (32) must be a multiple of local_batch_size (5)"},
		{"  local_batch_size: 16", "  local_batch_size: 32", "max_workers (2) cannot exceed global_batch_size / local_batch_size (32 / 32 = 1)"},
		{"  max_steps: 100", "  max_steps: 0", "step_scheduler needs max_steps or num_epochs"},
		{"  max_steps: 100", "  max_steps: -3", "step_scheduler.max_steps (-3) must be >= 0"},
		{"  hidden_size: 64", "  hidden_size: 60", "model: hidden_size (60) must be a multiple of 16"},
		{"  num_heads: 4", "  num_heads: 5", "model: hidden_size (64) must be a multiple of num_heads (5)"},
		{"  mlp_ratio: 4", "  mlp_ratio: 0.01", "model: mlp_ratio (0.01) × hidden_size (64) must be a positive integer"},
		{"  flow_shift: 1.0", "  flow_shift: 0", "flow_matching: flow: flow_shift (0) must be > 0"},
		{"  adapter_type: simple", "  adapter_type: unet", "flow_matching: flow: adapter_type: Unknown adapter type: unet"},
		{"  manifest: data/manifest.json", "  manifest: \"\"", "data.manifest is required"},
		{"model:\n", "model:\n  from_checkpoint: ckpt/step_10\n", `model.from_checkpoint ("ckpt/step_10") takes the model config from the checkpoint`},
		{"seed: 7", "seed: -7", "cannot unmarshal"},
		{"  max_steps: 100", "  max_steps: lots", "line "},
	}
	for _, c := range cases {
		doc := strings.Replace(validSpec, c.from, c.to, 1)
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v\nwant an error containing %q", c.to, err, c.want)
		}
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	doc := strings.Replace(strings.Replace(validSpec, "device: cpu", "device: tpu", 1), "min_workers: 1", "min_workers: 0", 1)
	doc = strings.Replace(doc, "  lr: 3.0e-4", "  lr: 0", 1)
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"device (", "min_workers (0) must be > 0", "optimizer.lr (0)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestParseRejectsNonSpecs(t *testing.T) {
	for _, doc := range []string{"", "- a\n- b\n", "name: a\n---\nname: b\n", "name: [unclosed"} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%q accepted", doc)
		}
	}
}

func TestModelNeedsConfigOrCheckpoint(t *testing.T) {
	doc := "data: {manifest: m.json}\nstep_scheduler: {max_steps: 1}\n"
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "model needs either from_checkpoint") {
		t.Errorf("got %v", err)
	}
	s, err := Parse([]byte(doc + "model: {from_checkpoint: ck/step_5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Model.FromCheckpoint != "ck/step_5" {
		t.Errorf("from_checkpoint = %q", s.Model.FromCheckpoint)
	}
}

func TestAccumulationAndWorldSize(t *testing.T) {
	st := StepScheduler{GlobalBatchSize: 24, LocalBatchSize: 4}
	for _, c := range []struct{ world, accum int }{{1, 6}, {2, 3}, {3, 2}, {6, 1}} {
		got, err := st.Accumulation(c.world)
		if err != nil || got != c.accum {
			t.Errorf("Accumulation(%d) = %d, %v; want %d", c.world, got, err, c.accum)
		}
	}
	for _, w := range []int{0, 4, 5, 7} {
		if _, err := st.Accumulation(w); err == nil {
			t.Errorf("Accumulation(%d) accepted", w)
		}
	}
	s := &Spec{MinWorkers: 2, MaxWorkers: 5, StepScheduler: st}
	for _, c := range []struct{ avail, want int }{{1, 0}, {2, 2}, {3, 3}, {4, 3}, {5, 3}, {9, 3}} {
		if got := s.WorldSizeFor(c.avail); got != c.want {
			t.Errorf("WorldSizeFor(%d) = %d, want %d", c.avail, got, c.want)
		}
	}
}
