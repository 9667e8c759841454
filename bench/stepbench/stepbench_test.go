package stepbench

import (
	"context"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/optim"
)

func TestConfigsMatchBenchTable(t *testing.T) {
	for name, want := range map[string]struct{ tokens int }{"bench-T": {64}, "bench-S": {256}, "bench-V": {320}, "bench-L": {1024}} {
		c, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Model.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if c.Tokens() != want.tokens {
			t.Errorf("%s: %d tokens, configs.md says %d", name, c.Tokens(), want.tokens)
		}
	}
	if _, err := Lookup("bench-X"); err == nil || !strings.Contains(err.Error(), "bench-T") {
		t.Fatalf("unknown config: %v", err)
	}
}

// TestRunTiny runs the whole benchmark loop on a tiny configuration: the
// loss must fall under AdamW and the report must be filled in.
func TestRunTiny(t *testing.T) {
	c := Config{Name: "tiny", Model: model.Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 32, Depth: 1, NumHeads: 2, MLPRatio: 2, TextDim: 8}, B: 2, F: 1, H: 8, W: 8, S: 4}
	res, err := Run(context.Background(), c, Options{Steps: 10, Warmup: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.StepsMS) != 10 || !(res.MedianStepMS > 0) || !(res.GFLOPS > 0) || !(res.PeakRSSMB > 0) || res.Config != "tiny" {
		t.Fatalf("incomplete report %+v", res)
	}
	if !(res.LastLoss < res.FirstLoss) {
		t.Fatalf("loss did not fall: %v → %v", res.FirstLoss, res.LastLoss)
	}
}

// deviceAdamW is the reference backend with a "device" AdamW (optim's
// arithmetic), to check that Run uses a backend's AdamWStepper.
type deviceAdamW struct {
	kernels.Reference
	calls int
}

func (d *deviceAdamW) AdamW(params, grads, m, v []float32, lr, beta1, beta2, eps, wd float64, step int64) error {
	d.calls++
	o := optim.AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: wd, M: m, V: v, Step: step - 1}
	return o.Update(params, grads, lr)
}

var lastDevice *deviceAdamW

func init() {
	kernels.Register("stepbench-test-device-adamw", func() (kernels.Backend, error) {
		lastDevice = &deviceAdamW{}
		return lastDevice, nil
	})
}

func TestRunUsesDeviceAdamW(t *testing.T) {
	c := Config{Name: "tiny", Model: model.Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 16, Depth: 1, NumHeads: 2, MLPRatio: 2, TextDim: 8}, B: 1, F: 1, H: 4, W: 4, S: 2}
	host, err := Run(context.Background(), c, Options{Steps: 10, Warmup: 1, Backend: "reference"})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := Run(context.Background(), c, Options{Steps: 10, Warmup: 1, Backend: "stepbench-test-device-adamw"})
	if err != nil {
		t.Fatal(err)
	}
	if lastDevice.calls != 11 {
		t.Fatalf("device AdamW called %d times, want 11", lastDevice.calls)
	}
	if dev.LastLoss != host.LastLoss {
		t.Fatalf("device AdamW path ends at loss %v, host path at %v", dev.LastLoss, host.LastLoss)
	}
}
