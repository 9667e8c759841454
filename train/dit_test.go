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

// deviceCPU is the CPU backend dressed as a device backend: it runs the EMA
// "on the device" (the same arithmetic) and counts what the trainer hands
// it, so the wiring of device updates is checked without a GPU.
type deviceCPU struct {
	kernels.Backend
	emaCalls, syncs int
}

func (d *deviceCPU) Alloc(n int) []float32 { return make([]float32, n) }
func (d *deviceCPU) Synchronize() error    { d.syncs++; return nil }
func (d *deviceCPU) EMAUpdate(shadow, params []float32, decay, oneMinus float32) error {
	d.emaCalls++
	for i, p := range params {
		if decay == 0 {
			shadow[i] = p
		} else {
			shadow[i] = decay*shadow[i] + oneMinus*p
		}
	}
	return nil
}

// TestDeviceEMAAndSync: on a backend with a device EMA the trainer keeps
// the shadow in the backend's memory, updates it there once per step,
// waits for the device after every step, and trains exactly as on the CPU.
func TestDeviceEMAAndSync(t *testing.T) {
	manifest, ds := testData(t)
	run := func(be kernels.Backend) *Trainer {
		spec := testSpec(t, manifest, t.TempDir(), "")
		spec.StepScheduler.MaxSteps = 4
		net, err := BuildNet(spec, be)
		if err != nil {
			t.Fatal(err)
		}
		tr := newTrainer(t, Options{Spec: spec, Data: ds, Net: net})
		if _, err := tr.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return tr
	}
	dev := &deviceCPU{Backend: cpu(t)}
	onDevice, onHost := run(dev), run(cpu(t))
	if dev.emaCalls != 4 || dev.syncs < 4 {
		t.Errorf("%d device EMA updates and %d syncs for 4 steps, want 4 and at least 4", dev.emaCalls, dev.syncs)
	}
	if !slices.Equal(onDevice.EMA(), onHost.EMA()) || !slices.Equal(onDevice.Net().Params(), onHost.Net().Params()) {
		t.Error("weights or EMA differ between the device-EMA run and the CPU run")
	}
	if slices.Equal(onDevice.EMA(), onDevice.Net().Params()) {
		t.Error("the EMA equals the weights: no averaging happened")
	}
}
