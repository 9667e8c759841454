package telemetry

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the JetStream stream that keeps every fmtrain subject.
const StreamName = "FMTRAIN"

// StreamOptions bounds what the stream keeps. The zero value means the
// defaults below; limits are per subject (one rank's metrics, one rank's
// logs, one job's events) or by age, never by reserved bytes, so creating
// the stream never fails on a server with a small JetStream store.
type StreamOptions struct {
	// MaxAge drops messages older than this (default 30 days).
	MaxAge time.Duration
	// MaxMsgsPerSubject keeps at most this many messages per subject,
	// dropping the oldest (default 200,000: a 200k-step job logged every
	// step).
	MaxMsgsPerSubject int64
	// Memory keeps the stream in memory instead of on disk (tests).
	Memory bool
}

const (
	defaultStreamMaxAge      = 30 * 24 * time.Hour
	defaultMaxMsgsPerSubject = 200_000
)

// StreamConfig is the JetStream configuration EnsureStream applies.
func StreamConfig(opts StreamOptions) jetstream.StreamConfig {
	if opts.MaxAge <= 0 {
		opts.MaxAge = defaultStreamMaxAge
	}
	if opts.MaxMsgsPerSubject <= 0 {
		opts.MaxMsgsPerSubject = defaultMaxMsgsPerSubject
	}
	storage := jetstream.FileStorage
	if opts.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:              StreamName,
		Description:       "fmtrain metrics, logs and events of every job",
		Subjects:          []string{SubjectRoot + ".>"},
		Storage:           storage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            opts.MaxAge,
		MaxMsgsPerSubject: opts.MaxMsgsPerSubject,
	}
}

// EnsureStream creates the stream, or updates it to opts, and is safe to call
// from every process that publishes (it is idempotent).
func EnsureStream(ctx context.Context, js jetstream.JetStream, opts StreamOptions) error {
	if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(opts)); err != nil {
		return fmt.Errorf("telemetry: creating JetStream stream %s: %w", StreamName, err)
	}
	return nil
}
