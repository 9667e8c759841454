package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes one job's telemetry for one rank (or NoRank for the
// coordinator). Metrics and logs are published asynchronously so a training
// step never waits for NATS; Flush waits for their acknowledgements. Events
// wait for the stream's acknowledgement.
//
// A Publisher is safe for concurrent use.
type Publisher struct {
	js   jetstream.JetStream
	job  string
	rank int
	now  func() time.Time

	mu      sync.Mutex
	lastErr error // the latest asynchronous publish failure, reported by Flush
}

// asyncAckTimeout bounds how long an asynchronous publish waits for the
// stream's acknowledgement before it counts as failed.
const asyncAckTimeout = 10 * time.Second

// NewPublisher returns a publisher for job and rank over nc. The stream must
// exist (EnsureStream). The publisher has its own JetStream context, so Flush
// waits for this publisher's messages only.
func NewPublisher(nc *nats.Conn, job string, rank int) (*Publisher, error) {
	if err := CheckJobID(job); err != nil {
		return nil, err
	}
	if rank < NoRank {
		return nil, fmt.Errorf("telemetry: rank %d is not a rank (NoRank is %d)", rank, NoRank)
	}
	p := &Publisher{job: job, rank: rank, now: time.Now}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(asyncAckTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) {
			p.mu.Lock()
			p.lastErr = fmt.Errorf("telemetry: publishing on %s: %w", msg.Subject, err)
			p.mu.Unlock()
		}))
	if err != nil {
		return nil, fmt.Errorf("telemetry: JetStream context: %w", err)
	}
	p.js = js
	return p, nil
}

// Job is the job this publisher publishes for.
func (p *Publisher) Job() string { return p.job }

// Rank is the rank this publisher publishes for (NoRank for the coordinator).
func (p *Publisher) Rank() int { return p.rank }

// Metrics publishes m on the rank's metrics subject, filling Job, Rank and,
// when zero, Time. It does not wait for the acknowledgement.
func (p *Publisher) Metrics(m Metrics) error {
	if p.rank == NoRank {
		return fmt.Errorf("telemetry: job %s: metrics need a worker rank", p.job)
	}
	m.Job, m.Rank = p.job, p.rank
	if m.Time.IsZero() {
		m.Time = p.now()
	}
	return p.publishAsync(MetricsSubject(p.job, p.rank), m)
}

// Log publishes r on the rank's logs subject, filling Job, Rank and, when
// zero, Time. It does not wait for the acknowledgement.
func (p *Publisher) Log(r LogRecord) error {
	if p.rank == NoRank {
		return fmt.Errorf("telemetry: job %s: logs need a worker rank", p.job)
	}
	r.Job, r.Rank = p.job, p.rank
	if r.Time.IsZero() {
		r.Time = p.now()
	}
	return p.publishAsync(LogsSubject(p.job, p.rank), r)
}

// Event publishes e on the job's events subject, filling Job and, when zero,
// Time, and waits until the stream has stored it.
func (p *Publisher) Event(ctx context.Context, e Event) error {
	if e.Kind == "" {
		return fmt.Errorf("telemetry: job %s: event has no kind", p.job)
	}
	e.Job = p.job
	if e.Time.IsZero() {
		e.Time = p.now()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("telemetry: encoding %s event: %w", e.Kind, err)
	}
	if _, err := p.js.Publish(ctx, EventsSubject(p.job), data); err != nil {
		return fmt.Errorf("telemetry: publishing %s event of job %s: %w", e.Kind, p.job, err)
	}
	return nil
}

func (p *Publisher) publishAsync(subject string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("telemetry: encoding message for %s: %w", subject, err)
	}
	if _, err := p.js.PublishAsync(subject, data); err != nil {
		return fmt.Errorf("telemetry: publishing on %s: %w", subject, err)
	}
	return nil
}

// Flush waits until every asynchronous publish so far is acknowledged, and
// returns the latest asynchronous failure, if any (clearing it).
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("telemetry: flushing job %s rank %d: %w", p.job, p.rank, ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.lastErr
	p.lastErr = nil
	return err
}
