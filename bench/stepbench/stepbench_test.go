package stepbench

import (
	"context"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/model"
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
