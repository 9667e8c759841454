package telemetry_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	. "github.com/fmtrain/fmtrain/telemetry"
	"github.com/fmtrain/fmtrain/telemetry/telemetrytest"
)

func startNATS(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	s := telemetrytest.Start(t)
	return s.Conn, s.JS
}

func TestSubjects(t *testing.T) {
	cases := []struct {
		subject string
		job     string
		kind    Kind
		rank    int
	}{
		{MetricsSubject("demo", 3), "demo", KindMetrics, 3},
		{LogsSubject("job-1_a", 0), "job-1_a", KindLogs, 0},
		{EventsSubject("demo"), "demo", KindEvents, NoRank},
	}
	for _, c := range cases {
		job, kind, rank, err := ParseSubject(c.subject)
		if err != nil || job != c.job || kind != c.kind || rank != c.rank {
			t.Errorf("ParseSubject(%q) = %q %q %d %v, want %q %q %d", c.subject, job, kind, rank, err, c.job, c.kind, c.rank)
		}
	}
	if got := MetricsSubject("demo", 2); got != "fmtrain.demo.metrics.2" {
		t.Errorf("MetricsSubject = %q", got)
	}
	for _, bad := range []string{"fm.demo.metrics.1", "fmtrain.demo", "fmtrain.demo.metrics", "fmtrain.demo.metrics.x",
		"fmtrain.demo.metrics.-1", "fmtrain.demo.events.1", "fmtrain.demo.bogus.1"} {
		if _, _, _, err := ParseSubject(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseSubject(%q) error = %v, want ErrBadSubject", bad, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a*", "a>", "a b", "é"} {
		if err := CheckJobID(bad); err == nil {
			t.Errorf("CheckJobID(%q) accepted", bad)
		}
	}
}

func TestPublishAndReadAll(t *testing.T) {
	nc, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var pubs []*Publisher
	for rank := range 2 {
		p, err := NewPublisher(nc, "demo", rank)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	coord, err := NewPublisher(nc, "demo", NoRank)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewPublisher(nc, "other", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Event(ctx, Event{Kind: EventStarted}); err != nil {
		t.Fatal(err)
	}
	if err := coord.Metrics(Metrics{Step: 1}); err == nil {
		t.Error("coordinator publisher accepted metrics")
	}
	const steps = 50
	for step := int64(1); step <= steps; step++ {
		for _, p := range pubs {
			m := Metrics{Step: step, Loss: 1 / float64(step), Device: &DeviceStats{Kind: "cpu"}, Sigma: &SigmaStats{Min: 0.1, Max: 0.9, Mean: 0.5}}
			if err := p.Metrics(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := other.Metrics(Metrics{Step: step}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pubs[1].Log(LogRecord{Level: "INFO", Message: "hello"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(pubs, other) {
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rank := 1
	if err := coord.Event(ctx, Event{Kind: EventFinished, Step: steps, Rank: &rank}); err != nil {
		t.Fatal(err)
	}

	metrics, err := ReadAll(ctx, js, "demo", KindMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if len(metrics) != 2*steps {
		t.Fatalf("ReadAll(metrics) = %d messages, want %d", len(metrics), 2*steps)
	}
	perRank := map[int]int64{}
	for _, m := range metrics {
		if m.Kind != KindMetrics || m.Metrics == nil || m.Metrics.Job != "demo" || m.Metrics.Rank != m.Rank {
			t.Fatalf("bad message %+v", m)
		}
		if m.Metrics.Step != perRank[m.Rank]+1 {
			t.Fatalf("rank %d: step %d after %d: out of order", m.Rank, m.Metrics.Step, perRank[m.Rank])
		}
		perRank[m.Rank] = m.Metrics.Step
		if m.Metrics.Time.IsZero() || m.Metrics.Device == nil || m.Metrics.Sigma == nil {
			t.Fatalf("fields lost in transit: %+v", *m.Metrics)
		}
	}
	all, err := ReadAll(ctx, js, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2*steps+3 {
		t.Fatalf("ReadAll(all kinds) = %d, want %d", len(all), 2*steps+3)
	}
	if first, last := all[0], all[len(all)-1]; first.Event == nil || first.Event.Kind != EventStarted ||
		last.Event == nil || last.Event.Kind != EventFinished || *last.Event.Rank != 1 || last.Pending != 0 {
		t.Fatalf("first/last = %+v / %+v", first, last)
	}
	none, err := ReadAll(ctx, js, "nosuchjob")
	if err != nil || len(none) != 0 {
		t.Fatalf("ReadAll(empty job) = %v, %v", none, err)
	}
	if _, err := ReadAll(ctx, js, "demo", Kind("bogus")); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestFollowLiveAndReplay(t *testing.T) {
	nc, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := NewPublisher(nc, "live", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Event(ctx, Event{Kind: EventStarted}); err != nil {
		t.Fatal(err)
	}

	// A live follower (not from start) must not see the old event.
	live := make(chan Message, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(ready)
		done <- Follow(ctx, js, FollowOptions{Job: "live", Kinds: []Kind{KindMetrics, KindEvents}}, func(m Message) error {
			live <- m
			if m.Event != nil && m.Event.Kind.Terminal() {
				return ErrStop
			}
			return nil
		})
	}()
	<-ready
	// The consumer is created asynchronously; publish until it sees one.
	deadline := time.After(10 * time.Second)
	var step int64
	for seen := false; !seen; {
		step++
		if err := pub.Metrics(Metrics{Step: step}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-live:
			if m.Kind != KindMetrics {
				t.Fatalf("live follower got %+v first", m)
			}
			seen = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("live follower saw nothing")
		}
	}
	if err := pub.Log(LogRecord{Message: "filtered out"}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Event(ctx, Event{Kind: EventFailed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for len(live) > 0 {
		m := <-live
		if m.Kind == KindLogs {
			t.Fatalf("kind filter let a log through: %+v", m)
		}
		if m.Event != nil && m.Event.Kind == EventFailed && m.Event.Error != "boom" {
			t.Fatalf("event = %+v", m.Event)
		}
	}

	// A replaying follower sees everything from the start and can tell when
	// it has caught up.
	var kinds []Kind
	err = Follow(ctx, js, FollowOptions{Job: "live", FromStart: true}, func(m Message) error {
		kinds = append(kinds, m.Kind)
		if m.Pending == 0 {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := int(step) + 3; len(kinds) != want || kinds[0] != KindEvents {
		t.Fatalf("replay = %v (%d), want %d messages starting with the started event", kinds, len(kinds), want)
	}

	// Cancelling the context ends Follow without an error.
	cctx, ccancel := context.WithCancel(ctx)
	go func() { time.Sleep(100 * time.Millisecond); ccancel() }()
	if err := Follow(cctx, js, FollowOptions{Job: "live"}, func(Message) error { return nil }); err != nil {
		t.Fatalf("Follow after cancel = %v", err)
	}
	wantErr := errors.New("callback failed")
	err = Follow(ctx, js, FollowOptions{Job: "live", FromStart: true}, func(Message) error { return wantErr })
	if !errors.Is(err, wantErr) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
}

func TestLogHandler(t *testing.T) {
	nc, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := NewPublisher(nc, "logs", 2)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(NewLogHandler(pub, "w-1", slog.LevelInfo))
	log.Debug("dropped")
	log.With("gen", 3).WithGroup("step").Info("done", "n", 7, "took", time.Second, "err", errors.New("x"))
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	msgs, err := ReadAll(ctx, js, "logs", KindLogs)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("got %d log records, want 1 (debug filtered)", len(msgs))
	}
	r := msgs[0].Log
	if r.Message != "done" || r.Level != "INFO" || r.Worker != "w-1" || r.Rank != 2 {
		t.Fatalf("record = %+v", r)
	}
	want := map[string]any{"gen": float64(3), "step.n": float64(7), "step.took": "1s", "step.err": "x"}
	for k, v := range want {
		if r.Attrs[k] != v {
			t.Errorf("attr %s = %v (%T), want %v", k, r.Attrs[k], r.Attrs[k], v)
		}
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	if _, err := Decode(MetricsSubject("a", 0), []byte("{not json")); err == nil {
		t.Fatal("garbage decoded")
	}
	if _, err := NewPublisher(nil, "bad.job", 0); err == nil {
		t.Fatal("bad job id accepted")
	}
}
