package telemetry

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStop, returned by a Follow callback, ends Follow without an error.
var ErrStop = errors.New("telemetry: stop following")

// FollowOptions chooses what Follow delivers.
type FollowOptions struct {
	Job string
	// Kinds to deliver; empty means all three.
	Kinds []Kind
	// FromStart replays everything the stream still holds for the job before
	// the live messages; otherwise only messages published from now on.
	FromStart bool
	// OnBadMessage, when set, is told about messages that do not decode
	// (they are skipped either way).
	OnBadMessage func(subject string, err error)
}

func (o FollowOptions) filters() ([]string, error) {
	if err := CheckJobID(o.Job); err != nil {
		return nil, err
	}
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = []Kind{KindMetrics, KindLogs, KindEvents}
	}
	filters := make([]string, 0, len(kinds))
	for _, k := range kinds {
		switch k {
		case KindMetrics, KindLogs, KindEvents:
			filters = append(filters, KindFilter(o.Job, k))
		default:
			return nil, fmt.Errorf("telemetry: unknown message kind %q (want metrics, logs or events)", k)
		}
	}
	return filters, nil
}

// Follow calls fn for every message of the job, in stream order, until ctx
// ends (returning nil), fn returns ErrStop (nil) or another error (that
// error), or the consumer fails. Message.Pending tells fn how many stored
// messages were still to come when the message was delivered, so a caller
// knows when a replay has caught up (Pending == 0).
func Follow(ctx context.Context, js jetstream.JetStream, opts FollowOptions, fn func(Message) error) error {
	filters, err := opts.filters()
	if err != nil {
		return err
	}
	policy := jetstream.DeliverNewPolicy
	if opts.FromStart {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: policy})
	if err != nil {
		return fmt.Errorf("telemetry: following job %s: %w", opts.Job, err)
	}
	err = consume(ctx, cons, opts.Job, func(raw jetstream.Msg) error {
		m, err := decodeStored(raw)
		if err != nil {
			if opts.OnBadMessage != nil {
				opts.OnBadMessage(raw.Subject(), err)
			}
			return nil
		}
		return fn(m)
	})
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// consume calls fn for each raw message of cons until ctx ends (nil) or fn
// or the consumer fails.
func consume(ctx context.Context, cons jetstream.Consumer, job string, fn func(jetstream.Msg) error) error {
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("telemetry: following job %s: %w", job, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		raw, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("telemetry: following job %s: %w", job, err)
		}
		if err := fn(raw); err != nil {
			return err
		}
	}
}

// ReadAll returns every message of the given kinds (all when none) that the
// stream holds for job now, in stream order. Messages that do not decode are
// skipped.
func ReadAll(ctx context.Context, js jetstream.JetStream, job string, kinds ...Kind) ([]Message, error) {
	filters, err := FollowOptions{Job: job, Kinds: kinds}.filters()
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: reading job %s: %w", job, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: reading job %s: %w", job, err)
	}
	if info.NumPending == 0 {
		return nil, nil
	}
	var out []Message
	err = consume(ctx, cons, job, func(raw jetstream.Msg) error {
		if m, err := decodeStored(raw); err == nil {
			out = append(out, m)
		}
		if md, err := raw.Metadata(); err == nil && md.NumPending == 0 {
			return ErrStop
		}
		return nil
	})
	if errors.Is(err, ErrStop) {
		return out, nil
	}
	if err == nil {
		err = fmt.Errorf("telemetry: reading job %s: %w", job, context.Cause(ctx))
	}
	return out, err
}

func decodeStored(raw jetstream.Msg) (Message, error) {
	m, err := Decode(raw.Subject(), raw.Data())
	if err != nil {
		return Message{}, err
	}
	if md, err := raw.Metadata(); err == nil {
		m.Pending = md.NumPending
		m.Sequence = md.Sequence.Stream
	}
	return m, nil
}
