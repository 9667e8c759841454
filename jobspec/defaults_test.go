package jobspec

import (
	"github.com/fmtrain/fmtrain/flow"
	"reflect"
	"testing"
)

// TestDefaults pins every default: changing one is a user-visible change
// that must also change docs/job-spec.md.
func TestDefaults(t *testing.T) {
	want := &Spec{
		Name:          "fmtrain-job",
		Seed:          42,
		Device:        "auto",
		MinWorkers:    1,
		MaxWorkers:    1,
		FlowMatching:  flow.DefaultConfig(),
		Data:          Data{Shuffle: true, TextDropoutProb: 0.1},
		Optimizer:     Optimizer{Name: "adamw", LR: 1e-4, Betas: []float64{0.9, 0.999}, Eps: 1e-8, WeightDecay: 0.01},
		ClipGradNorm:  ClipGradNorm{MaxNorm: 1},
		EMA:           EMA{},
		StepScheduler: StepScheduler{GlobalBatchSize: 32, LocalBatchSize: 8, LogEverySteps: 10},
		Checkpoint:    Checkpoint{Enabled: true, CheckpointDir: "checkpoints", KeepLast: 3},
		Sample:        Sample{NumSteps: 30, GuidanceScale: 4, PerPrompt: 4},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Default() =\n%+v\nwant\n%+v", got, want)
	}
}
