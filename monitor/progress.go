package monitor

import (
	"fmt"
	"strings"
	"time"

	"github.com/fmtrain/fmtrain/telemetry"
)

// Progress is what is known about one job from its telemetry: the latest
// metrics, the current generation and the terminal event, if any. It is a
// pure value: Apply folds one message in and returns the lines worth
// printing above a progress bar (events). Not safe for concurrent use.
type Progress struct {
	Job string
	// Latest is the newest metrics message of the lowest rank that reports
	// (rank 0 whenever it is alive), nil before the first.
	Latest *telemetry.Metrics
	// Generation and WorldSize are the newest formed generation's.
	Generation uint64
	WorldSize  int
	// MaxSteps is the job's length as the metrics report it (0: unknown).
	MaxSteps int64
	// Final is the terminal event (finished, failed, cancelled), nil while
	// the job runs.
	Final *telemetry.Event
	// LastEvent is the newest event of any kind.
	LastEvent *telemetry.Event
}

// Apply folds m into p and returns the lines to print for it (events only:
// metrics update the bar, logs are not Progress's business).
func (p *Progress) Apply(m telemetry.Message) []string {
	switch {
	case m.Metrics != nil:
		mt := m.Metrics
		if p.Latest == nil || mt.Generation > p.Latest.Generation ||
			mt.Generation == p.Latest.Generation && (mt.Rank < p.Latest.Rank || mt.Rank == p.Latest.Rank && mt.Step >= p.Latest.Step) {
			p.Latest = mt
		}
		if mt.MaxSteps > 0 {
			p.MaxSteps = mt.MaxSteps
		}
		return nil
	case m.Event != nil:
		e := m.Event
		p.LastEvent = e
		if e.Kind == telemetry.EventGenerationFormed && e.Generation >= p.Generation {
			p.Generation, p.WorldSize = e.Generation, e.WorldSize
		}
		if e.Kind.Terminal() {
			p.Final = e
		}
		return []string{FormatEvent(e)}
	}
	return nil
}

// Step is the newest step known (0 before the first metrics).
func (p *Progress) Step() int64 {
	if p.Latest == nil {
		return 0
	}
	return p.Latest.Step
}

// Summary is a one-line digest of the latest metrics, for the bar's label.
func (p *Progress) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", p.Job)
	if p.Generation > 0 {
		fmt.Fprintf(&b, " gen %d ×%d", p.Generation, p.WorldSize)
	}
	if m := p.Latest; m != nil {
		fmt.Fprintf(&b, " | loss %.4f lr %.2e gnorm %.3f %.1f samples/s", m.Loss, m.LR, m.GradNorm, m.SamplesPerSec)
		if d := m.Device; d != nil && d.Kind == "cuda" {
			fmt.Fprintf(&b, " | %s %.0f%% %.1f/%.1f GiB", d.Name, d.UtilPercent, gib(d.MemoryUsedBytes), gib(d.MemoryTotalBytes))
		}
	}
	return b.String()
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// FormatEvent renders an event as one human line.
func FormatEvent(e *telemetry.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s", e.Time.Local().Format(time.TimeOnly), e.Kind)
	if e.Generation > 0 {
		fmt.Fprintf(&b, " gen %d", e.Generation)
	}
	if e.Step > 0 {
		fmt.Fprintf(&b, " step %d", e.Step)
	}
	if e.WorldSize > 0 {
		fmt.Fprintf(&b, " world %d", e.WorldSize)
	}
	if len(e.Workers) > 0 {
		fmt.Fprintf(&b, " workers %s", strings.Join(e.Workers, ","))
	}
	if e.Worker != "" {
		fmt.Fprintf(&b, " worker %s", e.Worker)
	}
	if e.Rank != nil {
		fmt.Fprintf(&b, " rank %d", *e.Rank)
	}
	if e.Checkpoint != "" {
		fmt.Fprintf(&b, " checkpoint %s", e.Checkpoint)
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	if e.Error != "" {
		fmt.Fprintf(&b, ": %s", e.Error)
	}
	return b.String()
}

// FormatMetrics renders a metrics message as one line (for logs and
// summaries).
func FormatMetrics(m *telemetry.Metrics) string {
	s := fmt.Sprintf("step %d", m.Step)
	if m.MaxSteps > 0 {
		s += fmt.Sprintf("/%d", m.MaxSteps)
	}
	s += fmt.Sprintf(" epoch %d loss %.5f unweighted %.5f lr %.3e grad_norm %.4f %.1f samples/s (%.2fs/step) seen %d",
		m.Epoch, m.Loss, m.UnweightedLoss, m.LR, m.GradNorm, m.SamplesPerSec, m.StepSeconds, m.SamplesSeen)
	if m.Sigma != nil {
		s += fmt.Sprintf(" sigma[min %.3f mean %.3f max %.3f]", m.Sigma.Min, m.Sigma.Mean, m.Sigma.Max)
	}
	return s
}

// FormatLog renders a log record as one line.
func FormatLog(r *telemetry.LogRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rank %d %-5s %s", r.Time.Local().Format("15:04:05.000"), r.Rank, r.Level, r.Message)
	for _, k := range sortedKeys(r.Attrs) {
		fmt.Fprintf(&b, " %s=%v", k, r.Attrs[k])
	}
	return b.String()
}
