package jobspec

import (
	"reflect"
	"testing"
)

// TestDefaults pins every default: changing one is a user-visible change
// that must also change docs/job-spec.md.
func TestDefaults(t *testing.T) {
	want := &Spec{
		Name:       "fmtrain-job",
		Seed:       42,
		Device:     "auto",
		MinWorkers: 1,
		MaxWorkers: 1,
		FlowMatching: FlowMatching{
			AdapterType: "simple", NumTrainTimesteps: 1000, TimestepSampling: "logit_normal",
			FlowShift: 3.0, I2VProb: 0.3, CFGDropoutProb: 0.1, LogitMean: 0, LogitStd: 1,
			MixUniformRatio: 0.1, BetaAlpha: 2.5, BetaBeta: 1.5, UseSigmaNoise: true,
			SigmaMin: 0, SigmaMax: 1, UseLossWeighting: true, LossWeightingScheme: "linear",
			LogInterval: 100, SummaryLogInterval: 10,
		},
		Data:          Data{Shuffle: true},
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
