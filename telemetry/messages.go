package telemetry

import (
	"encoding/json"
	"fmt"
	"time"
)

// Metrics is one rank's report for one logged training step. Loss and the
// other step statistics are the values averaged over all ranks when the
// training loop reduces them (rank 0's message is the job's curve); Device
// and SamplesPerSec are this rank's own.
type Metrics struct {
	Time       time.Time `json:"time"`
	Job        string    `json:"job"`
	Rank       int       `json:"rank"`
	WorldSize  int       `json:"world_size"`
	Generation uint64    `json:"generation"`
	// Step is the optimizer step just completed (1-based); MaxSteps the job's
	// total (0 when the job runs by epochs and the total is unknown).
	Step     int64 `json:"step"`
	MaxSteps int64 `json:"max_steps,omitempty"`
	Epoch    int64 `json:"epoch"`
	// SamplesSeen is the number of samples the whole job (all ranks) has
	// consumed after this step: step × global batch size.
	SamplesSeen int64 `json:"samples_seen"`

	Loss           float64 `json:"loss"`
	UnweightedLoss float64 `json:"unweighted_loss"`
	// LocalLoss marks Loss and UnweightedLoss as the publishing rank's own:
	// a peer was lost after the step completed, before the losses could be
	// averaged across ranks.
	LocalLoss     bool    `json:"local_loss,omitempty"`
	LR            float64 `json:"lr"`
	GradNorm      float64 `json:"grad_norm"`
	SamplesPerSec float64 `json:"samples_per_sec"`
	StepSeconds   float64 `json:"step_seconds"`

	Sigma *SigmaStats `json:"sigma,omitempty"`
	// Device is nil when the worker could not read its device's statistics.
	Device *DeviceStats `json:"device,omitempty"`
}

// SigmaStats summarises the noise levels sampled in the step's batch.
type SigmaStats struct {
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// DeviceStats is a snapshot of the device a rank trains on. Fields a device
// cannot report are left zero and omitted.
type DeviceStats struct {
	Kind             string  `json:"kind"` // "cpu" or "cuda"
	Index            int     `json:"index"`
	Name             string  `json:"name,omitempty"`
	UtilPercent      float64 `json:"util_percent,omitempty"`
	MemoryUsedBytes  uint64  `json:"memory_used_bytes,omitempty"`
	MemoryTotalBytes uint64  `json:"memory_total_bytes,omitempty"`
	TemperatureC     float64 `json:"temperature_c,omitempty"`
	PowerWatts       float64 `json:"power_watts,omitempty"`
}

// LogRecord is one log line of a rank (a slog record).
type LogRecord struct {
	Time    time.Time      `json:"time"`
	Job     string         `json:"job"`
	Rank    int            `json:"rank"`
	Worker  string         `json:"worker,omitempty"`
	Level   string         `json:"level"`
	Message string         `json:"msg"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// EventKind names what happened to a job.
type EventKind string

// The event kinds. The coordinator publishes all of them except
// EventFirstStep, which rank 0 publishes when it completes the first step of
// a generation (so the recovery time after a failure can be read off the
// stream), and EventWorkerDraining, which a worker publishes on SIGTERM.
const (
	EventStarted           EventKind = "started"
	EventGenerationFormed  EventKind = "generation_formed"
	EventFirstStep         EventKind = "first_step"
	EventWorkerJoined      EventKind = "worker_joined"
	EventWorkerLost        EventKind = "worker_lost"
	EventWorkerDraining    EventKind = "worker_draining"
	EventCheckpointWritten EventKind = "checkpoint_written"
	EventFinished          EventKind = "finished"
	EventFailed            EventKind = "failed"
	EventCancelled         EventKind = "cancelled"
)

// Terminal reports whether no event follows k for the job.
func (k EventKind) Terminal() bool {
	return k == EventFinished || k == EventFailed || k == EventCancelled
}

// Event is one step in a job's life. Fields that do not apply to a kind are
// left zero and omitted.
type Event struct {
	Time time.Time `json:"time"`
	Job  string    `json:"job"`
	Kind EventKind `json:"kind"`
	// Generation is the generation the event belongs to; Step the job's step
	// when it happened (the resume step for generation_formed).
	Generation uint64 `json:"generation,omitempty"`
	Step       int64  `json:"step,omitempty"`
	// WorldSize and Workers (worker ids in rank order) describe a formed
	// generation; Worker and Rank name the worker an event is about.
	WorldSize  int      `json:"world_size,omitempty"`
	Workers    []string `json:"workers,omitempty"`
	Worker     string   `json:"worker,omitempty"`
	Rank       *int     `json:"rank,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`
	// Error says why a job failed or a worker was lost.
	Error  string `json:"error,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Message is one decoded telemetry message: exactly one of Metrics, Log and
// Event is set, matching Kind.
type Message struct {
	Subject string
	// Sequence is the message's stream sequence and Pending the number of
	// stored messages the consumer had still to deliver after it (0: caught
	// up); both are zero for a message that did not come from the stream.
	Sequence uint64
	Pending  uint64
	Job      string
	Kind     Kind
	Rank     int
	Metrics  *Metrics
	Log      *LogRecord
	Event    *Event
}

// Decode parses a message received on subject.
func Decode(subject string, data []byte) (Message, error) {
	job, kind, rank, err := ParseSubject(subject)
	if err != nil {
		return Message{}, err
	}
	m := Message{Subject: subject, Job: job, Kind: kind, Rank: rank}
	var target any
	switch kind {
	case KindMetrics:
		m.Metrics = new(Metrics)
		target = m.Metrics
	case KindLogs:
		m.Log = new(LogRecord)
		target = m.Log
	case KindEvents:
		m.Event = new(Event)
		target = m.Event
	}
	if err := json.Unmarshal(data, target); err != nil {
		return Message{}, fmt.Errorf("telemetry: decoding %s message on %q: %w", kind, subject, err)
	}
	return m, nil
}
