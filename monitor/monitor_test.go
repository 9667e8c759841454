package monitor

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/fmtrain/fmtrain/telemetry/telemetrytest"
)

func metricsMsg(gen uint64, rank int, step int64, loss float64) telemetry.Message {
	return telemetry.Message{Kind: telemetry.KindMetrics, Rank: rank, Metrics: &telemetry.Metrics{
		Generation: gen, Rank: rank, Step: step, MaxSteps: 20, Loss: loss, LR: 1e-3, GradNorm: 0.5,
	}}
}

func TestCurvesKeepTheLaterGeneration(t *testing.T) {
	var msgs []telemetry.Message
	for s := int64(1); s <= 6; s++ { // generation 1 reaches step 6 ...
		msgs = append(msgs, metricsMsg(1, 0, s, float64(s)), metricsMsg(1, 1, s, -1))
	}
	for s := int64(5); s <= 8; s++ { // ... then fails; generation 2 resumes at step 4's checkpoint
		msgs = append(msgs, metricsMsg(2, 0, s, 10*float64(s)))
	}
	c := CurvesFrom(msgs)
	wantSteps := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	wantLoss := []float64{1, 2, 3, 4, 50, 60, 70, 80}
	if !reflect.DeepEqual(c.Step, wantSteps) || !reflect.DeepEqual(c.Loss, wantLoss) {
		t.Fatalf("curves = steps %v loss %v, want %v %v", c.Step, c.Loss, wantSteps, wantLoss)
	}
	if c.Len() != len(c.LR) || c.Len() != len(c.GradNorm) || c.Len() != len(c.UnweightedLoss) {
		t.Fatal("series lengths differ")
	}
}

func TestProgressApply(t *testing.T) {
	p := &Progress{Job: "j"}
	rank := 2
	lines := p.Apply(telemetry.Message{Event: &telemetry.Event{Kind: telemetry.EventGenerationFormed, Generation: 3, WorldSize: 2, Workers: []string{"a", "b"}}})
	if len(lines) != 1 || !strings.Contains(lines[0], "generation_formed gen 3") || !strings.Contains(lines[0], "workers a,b") {
		t.Fatalf("lines = %q", lines)
	}
	p.Apply(metricsMsg(3, 1, 5, 9))
	p.Apply(metricsMsg(3, 0, 5, 1))
	p.Apply(metricsMsg(3, 1, 6, 9)) // rank 0 speaks for the job once it reports
	if p.Latest.Rank != 0 || p.Step() != 5 || p.MaxSteps != 20 {
		t.Fatalf("latest = %+v", p.Latest)
	}
	p.Apply(metricsMsg(4, 1, 6, 2)) // a newer generation wins even from another rank
	if p.Latest.Generation != 4 || p.Step() != 6 {
		t.Fatalf("latest = %+v", p.Latest)
	}
	if p.Final != nil {
		t.Fatal("final before the end")
	}
	lines = p.Apply(telemetry.Message{Event: &telemetry.Event{Kind: telemetry.EventFailed, Rank: &rank, Error: "dataset missing"}})
	if p.Final == nil || !strings.Contains(lines[0], "rank 2: dataset missing") {
		t.Fatalf("final %v, lines %q", p.Final, lines)
	}
	if s := p.Summary(); !strings.Contains(s, "gen 3 ×2") || !strings.Contains(s, "loss 2.0000") {
		t.Fatalf("summary = %q", s)
	}
}

// publishJob publishes a short job's life: started, a generation, steps of
// metrics and a log line per rank, and the finishing event.
func publishJob(t *testing.T, s *telemetrytest.Server, job string, steps int64) {
	t.Helper()
	ctx := context.Background()
	coord, err := telemetry.NewPublisher(s.Conn, job, telemetry.NoRank)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(coord.Event(ctx, telemetry.Event{Kind: telemetry.EventStarted}))
	must(coord.Event(ctx, telemetry.Event{Kind: telemetry.EventGenerationFormed, Generation: 1, WorldSize: 2}))
	for rank := range 2 {
		p, err := telemetry.NewPublisher(s.Conn, job, rank)
		must(err)
		must(p.Log(telemetry.LogRecord{Level: "INFO", Message: "training", Attrs: map[string]any{"rank": rank}}))
		for step := int64(1); step <= steps; step++ {
			must(p.Metrics(telemetry.Metrics{Generation: 1, Step: step, MaxSteps: steps, Loss: 1 / float64(step)}))
		}
		must(p.Flush(ctx))
	}
	must(coord.Event(ctx, telemetry.Event{Kind: telemetry.EventFinished, Step: steps}))
}

func TestWatchLogsAndCurvesFromNATS(t *testing.T) {
	s := telemetrytest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Watch live: start watching before the job publishes anything.
	type result struct {
		final *telemetry.Event
		err   error
	}
	var out bytes.Buffer
	done := make(chan result, 1)
	go func() {
		final, err := Watch(ctx, s.JS, "live", WatchOptions{Out: &out, Bar: true})
		done <- result{final, err}
	}()
	publishJob(t, s, "live", 12)
	r := <-done
	if r.err != nil || r.final == nil || r.final.Kind != telemetry.EventFinished {
		t.Fatalf("Watch = %+v, %v", r.final, r.err)
	}
	text := out.String()
	for _, want := range []string{"started", "generation_formed gen 1 world 2", "finished", "last: gen 1 step 12/12"} {
		if !strings.Contains(text, want) {
			t.Errorf("watch output lacks %q:\n%s", want, text)
		}
	}

	// Watch after the fact, without a bar: one line per rank-0 step.
	out.Reset()
	final, err := Watch(ctx, s.JS, "live", WatchOptions{Out: &out, Logs: true})
	if err != nil || final == nil {
		t.Fatalf("Watch after the fact = %v, %v", final, err)
	}
	if n := strings.Count(out.String(), " loss "); n != 12 {
		t.Errorf("line mode printed %d metrics lines, want 12:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "training rank=1") {
		t.Errorf("logs missing:\n%s", out.String())
	}

	out.Reset()
	if err := PrintLogs(ctx, s.JS, "live", LogsOptions{Out: &out, Rank: 1}); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "rank 1 INFO  training rank=1") || strings.Contains(got, "rank 0 INFO") || !strings.Contains(got, "finished") {
		t.Fatalf("PrintLogs(rank 1) =\n%s", got)
	}
	out.Reset()
	if err := PrintLogs(ctx, s.JS, "live", LogsOptions{Out: &out, Rank: -1, Follow: true}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "INFO  training") != 2 {
		t.Fatalf("PrintLogs(follow) =\n%s", out.String())
	}

	c, err := ReadCurves(ctx, s.JS, "live")
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 12 || c.Step[11] != 12 || c.Loss[1] != 0.5 {
		t.Fatalf("curves = %+v", c)
	}
	if _, err := ReadCurves(ctx, s.JS, "nosuchjob"); err == nil || !strings.Contains(err.Error(), "no rank-0 metrics") {
		t.Fatalf("ReadCurves(missing job) = %v", err)
	}

	// A cancelled watch returns nil, nil.
	cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer ccancel()
	if final, err := Watch(cctx, s.JS, "never", WatchOptions{}); final != nil || err != nil {
		t.Fatalf("Watch(cancelled) = %v, %v", final, err)
	}
}

func TestWritePlot(t *testing.T) {
	c := CurvesFrom([]telemetry.Message{metricsMsg(1, 0, 1, 1), metricsMsg(1, 0, 2, 0.5), metricsMsg(1, 0, 3, 0.25)})
	path := filepath.Join(t.TempDir(), "curves.png")
	if err := WritePlot(path, "j", c); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Fatalf("plot is %v", b)
	}
	if err := WritePlot(filepath.Join(t.TempDir(), "nodir", "x.png"), "j", c); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}
