package monitor

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/fmtrain/fmtrain/telemetry"
)

// WatchOptions configures Watch.
type WatchOptions struct {
	// Out receives the bar or the lines.
	Out io.Writer
	// Bar draws a live progress bar (for a terminal); otherwise every rank-0
	// metrics message becomes one line (for logs and pipes).
	Bar bool
	// Logs also prints the workers' log records.
	Logs bool
}

// Watch follows a job from the beginning of its telemetry until it ends and
// returns the terminal event (finished, failed or cancelled), or nil with no
// error when ctx ends first. Events are printed as lines; metrics drive the
// bar (or print a line each when Bar is off).
func Watch(ctx context.Context, js jetstream.JetStream, job string, opts WatchOptions) (*telemetry.Event, error) {
	p := &Progress{Job: job}
	v := newView(opts, p)
	defer v.close()
	kinds := []telemetry.Kind{telemetry.KindMetrics, telemetry.KindEvents}
	if opts.Logs {
		kinds = append(kinds, telemetry.KindLogs)
	}
	err := telemetry.Follow(ctx, js, telemetry.FollowOptions{Job: job, Kinds: kinds, FromStart: true}, func(m telemetry.Message) error {
		v.show(m, p.Apply(m))
		if p.Final != nil {
			return telemetry.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("monitor: watching job %s: %w", job, err)
	}
	return p.Final, nil
}

// view renders Progress either as a bar or as lines.
type view struct {
	opts WatchOptions
	p    *Progress
	bar  *progressbar.ProgressBar
}

func newView(opts WatchOptions, p *Progress) *view {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	return &view{opts: opts, p: p}
}

func (v *view) show(m telemetry.Message, lines []string) {
	if m.Log != nil {
		lines = append(lines, FormatLog(m.Log))
	}
	if !v.opts.Bar {
		for _, l := range lines {
			fmt.Fprintln(v.opts.Out, l)
		}
		if m.Metrics != nil && m.Metrics.Rank == 0 {
			fmt.Fprintf(v.opts.Out, "%s  gen %d %s\n", m.Metrics.Time.Local().Format(time.TimeOnly), m.Metrics.Generation, FormatMetrics(m.Metrics))
		}
		return
	}
	if len(lines) > 0 && v.bar != nil {
		_ = v.bar.Clear()
	}
	for _, l := range lines {
		fmt.Fprintln(v.opts.Out, l)
	}
	if m.Pending > 0 && len(lines) == 0 {
		return // replaying history: draw once caught up
	}
	v.draw()
}

func (v *view) draw() {
	if v.p.MaxSteps > 0 && v.bar == nil {
		v.bar = progressbar.NewOptions64(v.p.MaxSteps,
			progressbar.OptionSetWriter(v.opts.Out),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetItsString("steps"),
		)
	}
	if v.bar == nil {
		return
	}
	v.bar.Describe(v.p.Summary())
	_ = v.bar.Set64(v.p.Step())
}

func (v *view) close() {
	if v.bar != nil {
		_ = v.bar.Exit()
		fmt.Fprintln(v.opts.Out)
	}
	if m := v.p.Latest; m != nil && v.opts.Bar {
		fmt.Fprintf(v.opts.Out, "last: gen %d %s\n", m.Generation, FormatMetrics(m))
	}
}

// LogsOptions configures PrintLogs.
type LogsOptions struct {
	Out io.Writer
	// Follow keeps printing new records until the job ends or ctx ends;
	// otherwise PrintLogs prints what the stream holds and returns.
	Follow bool
	// Rank prints only this rank's records (-1: all ranks).
	Rank int
}

// PrintLogs prints a job's log records (and its events, which say what the
// logs are about) from the beginning of the stream.
func PrintLogs(ctx context.Context, js jetstream.JetStream, job string, opts LogsOptions) error {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	print := func(m telemetry.Message) bool {
		switch {
		case m.Log != nil && (opts.Rank < 0 || m.Rank == opts.Rank):
			fmt.Fprintln(opts.Out, FormatLog(m.Log))
		case m.Event != nil:
			fmt.Fprintln(opts.Out, FormatEvent(m.Event))
			return m.Event.Kind.Terminal()
		}
		return false
	}
	kinds := []telemetry.Kind{telemetry.KindLogs, telemetry.KindEvents}
	if !opts.Follow {
		msgs, err := telemetry.ReadAll(ctx, js, job, kinds...)
		if err != nil {
			return fmt.Errorf("monitor: logs of job %s: %w", job, err)
		}
		for _, m := range msgs {
			print(m)
		}
		return nil
	}
	err := telemetry.Follow(ctx, js, telemetry.FollowOptions{Job: job, Kinds: kinds, FromStart: true}, func(m telemetry.Message) error {
		if print(m) {
			return telemetry.ErrStop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("monitor: following logs of job %s: %w", job, err)
	}
	return nil
}
