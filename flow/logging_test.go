package flow

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestDebugLoggingCadence(t *testing.T) {
	run := func(debugField bool, steps ...int) []string {
		var buf bytes.Buffer
		cfg := DefaultConfig()
		cfg.DebugLogging = debugField
		p, err := New(cfg, SimpleAdapter{}, Options{RNG: NewRNG(1, 0), Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		model := &fixedOutputModel{shapes: func(c *ModelCall) [][]int { return [][]int{c.Tensor("hidden_states").Shape} }, nudgeO: -1}
		batch := Batch{"video_latents": FromFloat32(Float32, NewRNG(2, 0).Randn(16), 2, 2, 1, 2, 2), "text_embeddings": NewTensor(Float32, 2, 3, 4)}
		var lines []string
		for _, s := range steps {
			buf.Reset()
			opts := DefaultStepOptions()
			opts.GlobalStep = s
			if _, err := p.Step(context.Background(), model, batch, opts); err != nil {
				t.Fatal(err)
			}
			var msgs []string
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if i := strings.Index(l, `msg="`); i >= 0 {
					msgs = append(msgs, strings.SplitN(l[i+5:], `"`, 2)[0])
				}
			}
			lines = append(lines, strings.Join(msgs, "|"))
		}
		return lines
	}
	got := run(true, 0, 5, 10, 100, 110)
	want := []string{
		"flow: forward (detailed)|flow: loss (detailed)", // step 0: both conditions, detailed wins
		"",                         // neither
		"flow: forward|flow: loss", // summary
		"flow: forward (detailed)|flow: loss (detailed)",
		"flow: forward|flow: loss",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("step %d: logged %q, want %q", []int{0, 5, 10, 100, 110}[i], got[i], want[i])
		}
	}
	if got := run(false, 0, 10); got[0] != "" || got[1] != "" {
		t.Errorf("debug off: logged %q", got)
	}
	t.Setenv("DEBUG_TRAINING", "1")
	if got := run(false, 10); got[0] != "flow: forward|flow: loss" {
		t.Errorf("DEBUG_TRAINING=1: logged %q", got)
	}
}
