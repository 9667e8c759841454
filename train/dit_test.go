package train

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/kernels"
)

func cpu(t *testing.T) kernels.Backend {
	t.Helper()
	be, err := kernels.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	return be
}

// FM-DiT trains through the loop, and resuming from a checkpoint is
// bit-identical to the straight run.
func TestDiTResumeIsExact(t *testing.T) {
	manifest, ds := testData(t)
	mk := func(dir, resume string) *Trainer {
		spec := testSpec(t, manifest, dir, "")
		spec.Model.DiT.HiddenSize, spec.Model.DiT.NumHeads = 32, 2
		spec.StepScheduler.MaxSteps = 6
		spec.Optimizer.LR = 1e-3
		net, err := BuildNet(spec, cpu(t))
		if err != nil {
			t.Fatal(err)
		}
		return newTrainer(t, Options{Spec: spec, Data: ds, Net: net, WriteCheckpoints: true, ResumeFrom: resume})
	}
	straight := mk(t.TempDir(), "")
	var losses []float64
	straight.opts.OnStep = func(m Metrics) { losses = append(losses, m.Loss) }
	if _, err := straight.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	split := mk(t.TempDir(), "")
	for split.CurrentStep() < 4 {
		if _, err := split.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ck, err := split.Save(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resumed := mk(filepath.Dir(ck), ck)
	if _, err := resumed.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(straight.Net().Params(), resumed.Net().Params()) {
		t.Fatal("FM-DiT weights differ between the straight and the resumed run")
	}
	for _, l := range losses {
		if !(l > 0) {
			t.Fatalf("losses %v", losses)
		}
	}
	// The checkpoint's weights load back as an FM-DiT, EMA included.
	last, _, err := checkpoint.Latest(filepath.Dir(ck))
	if err != nil || last == "" {
		t.Fatalf("latest: %q %v", last, err)
	}
	for _, ema := range []bool{false, true} {
		d, err := LoadDiT(last, cpu(t), ema)
		if err != nil {
			t.Fatal(err)
		}
		want := resumed.Net().Params()
		if ema {
			want = resumed.EMA()
		}
		if !slices.Equal(d.Params(), want) {
			t.Errorf("LoadDiT(ema=%v) differs from the trained weights", ema)
		}
	}
}
