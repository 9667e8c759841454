package monitor

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fmtrain/fmtrain/telemetry"
)

// Curves are a job's per-step training curves, one point per logged step,
// in step order.
type Curves struct {
	Step           []float64
	Loss           []float64
	UnweightedLoss []float64
	LR             []float64
	GradNorm       []float64
}

// Len is the number of points.
func (c Curves) Len() int { return len(c.Step) }

// CurvesFrom builds the curves from metrics messages in stream order. Rank 0
// speaks for the job (every generation has a rank 0). When a generation
// restarts from a checkpoint it repeats steps an earlier generation already
// logged; the later message wins, so the curve shows what the model that
// finished actually went through.
func CurvesFrom(msgs []telemetry.Message) Curves {
	byStep := map[int64]*telemetry.Metrics{}
	for _, m := range msgs {
		if m.Metrics == nil || m.Metrics.Rank != 0 {
			continue
		}
		byStep[m.Metrics.Step] = m.Metrics
	}
	steps := make([]int64, 0, len(byStep))
	for s := range byStep {
		steps = append(steps, s)
	}
	slices.Sort(steps)
	var c Curves
	for _, s := range steps {
		m := byStep[s]
		c.Step = append(c.Step, float64(s))
		c.Loss = append(c.Loss, m.Loss)
		c.UnweightedLoss = append(c.UnweightedLoss, m.UnweightedLoss)
		c.LR = append(c.LR, m.LR)
		c.GradNorm = append(c.GradNorm, m.GradNorm)
	}
	return c
}

// ReadCurves reads the job's metrics from the stream and builds its curves.
// A job with no metrics is an error that says so.
func ReadCurves(ctx context.Context, js jetstream.JetStream, job string) (Curves, error) {
	msgs, err := telemetry.ReadAll(ctx, js, job, telemetry.KindMetrics)
	if err != nil {
		return Curves{}, fmt.Errorf("monitor: reading metrics of job %s: %w", job, err)
	}
	c := CurvesFrom(msgs)
	if c.Len() == 0 {
		return Curves{}, fmt.Errorf("monitor: job %s has no rank-0 metrics in stream %s (wrong job id or NATS server, or the job has not logged a step yet)", job, telemetry.StreamName)
	}
	return c, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
