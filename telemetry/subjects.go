package telemetry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SubjectRoot is the first token of every fmtrain subject.
const SubjectRoot = "fmtrain"

// Kind is the kind of a telemetry message, the third token of its subject.
type Kind string

// The message kinds.
const (
	KindMetrics Kind = "metrics"
	KindLogs    Kind = "logs"
	KindEvents  Kind = "events"
)

// NoRank marks a publisher that is not a worker rank (the coordinator): it
// publishes only events.
const NoRank = -1

// ErrBadSubject is returned when a subject is not an fmtrain telemetry subject.
var ErrBadSubject = errors.New("telemetry: not an fmtrain subject")

// CheckJobID reports whether job can be used as one NATS subject token: it
// must be non-empty and use only letters, digits, '-' and '_'.
func CheckJobID(job string) error {
	if job == "" {
		return errors.New("telemetry: job id is empty")
	}
	for _, r := range job {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("telemetry: job id %q: character %q is not allowed (letters, digits, '-' and '_' only)", job, r)
		}
	}
	return nil
}

// MetricsSubject is the subject rank's metrics of job are published on.
func MetricsSubject(job string, rank int) string {
	return SubjectRoot + "." + job + "." + string(KindMetrics) + "." + strconv.Itoa(rank)
}

// LogsSubject is the subject rank's log records of job are published on.
func LogsSubject(job string, rank int) string {
	return SubjectRoot + "." + job + "." + string(KindLogs) + "." + strconv.Itoa(rank)
}

// EventsSubject is the subject job's events are published on.
func EventsSubject(job string) string {
	return SubjectRoot + "." + job + "." + string(KindEvents)
}

// JobFilter matches every subject of job (for a subscription).
func JobFilter(job string) string { return SubjectRoot + "." + job + ".>" }

// KindFilter matches every subject of one kind of job: all ranks' metrics
// or logs, or the events.
func KindFilter(job string, kind Kind) string {
	if kind == KindEvents {
		return EventsSubject(job)
	}
	return SubjectRoot + "." + job + "." + string(kind) + ".*"
}

// ParseSubject splits an fmtrain subject into job, kind and rank (NoRank for
// events).
func ParseSubject(subject string) (job string, kind Kind, rank int, err error) {
	tok := strings.Split(subject, ".")
	if len(tok) < 3 || tok[0] != SubjectRoot {
		return "", "", 0, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	job, kind = tok[1], Kind(tok[2])
	switch kind {
	case KindEvents:
		if len(tok) != 3 {
			return "", "", 0, fmt.Errorf("%w: %q has tokens after %q", ErrBadSubject, subject, kind)
		}
		return job, kind, NoRank, nil
	case KindMetrics, KindLogs:
		if len(tok) != 4 {
			return "", "", 0, fmt.Errorf("%w: %q needs a rank after %q", ErrBadSubject, subject, kind)
		}
		rank, err = strconv.Atoi(tok[3])
		if err != nil || rank < 0 {
			return "", "", 0, fmt.Errorf("%w: %q: rank %q is not a non-negative integer", ErrBadSubject, subject, tok[3])
		}
		return job, kind, rank, nil
	}
	return "", "", 0, fmt.Errorf("%w: %q: unknown kind %q", ErrBadSubject, subject, tok[2])
}
