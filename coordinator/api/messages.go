package api

import (
	"fmt"
	"time"

	"github.com/fmtrain/fmtrain/jobspec"
)

// RegisterRequest announces a worker. WorkerID must be unique in the cluster
// and stable across restarts of the same worker (e.g. <host>-<device>), so a
// restarted worker is recognised as the same one.
type RegisterRequest struct {
	WorkerID string `json:"worker_id"`
	Host     string `json:"host"`
	// Device is what the worker trains on: "cpu" or "cuda:<n>".
	Device string `json:"device"`
	// DeviceName is the human name (e.g. "NVIDIA H100 80GB HBM3"); optional.
	DeviceName string `json:"device_name,omitempty"`
	// CollectiveAddr is the host:port peers dial for the all-reduce ring
	// (collective.Endpoint.Addr()).
	CollectiveAddr string `json:"collective_addr"`
	// HTTPAddr is the worker's own /healthz endpoint; optional.
	HTTPAddr string `json:"http_addr,omitempty"`
	// Incarnation identifies this run of the worker process (random at
	// start). A registration repeated with the same incarnation (a retry
	// after a timeout) changes nothing; a new incarnation means the worker
	// restarted, which ends any generation that counted it.
	Incarnation string `json:"incarnation,omitempty"`
}

// Validate names the first missing or malformed field.
func (r RegisterRequest) Validate() error {
	switch {
	case r.WorkerID == "":
		return fmt.Errorf("api: register: worker_id is empty")
	case r.Device == "":
		return fmt.Errorf("api: register: worker %s: device is empty (want cpu or cuda:<n>)", r.WorkerID)
	case r.CollectiveAddr == "":
		return fmt.Errorf("api: register: worker %s: collective_addr is empty", r.WorkerID)
	}
	return nil
}

// IsCUDA reports whether a Device string names a GPU.
func IsCUDA(device string) bool { return len(device) >= 4 && device[:4] == "cuda" }

// RegisterResponse tells the worker how often to heartbeat.
type RegisterResponse struct {
	WorkerID string `json:"worker_id"`
	// HeartbeatInterval is how often to call Heartbeat.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// HeartbeatTimeout is how long without a heartbeat before the
	// coordinator declares the worker lost.
	HeartbeatTimeout Duration `json:"heartbeat_timeout"`
}

// HeartbeatRequest says the worker is alive and what it is doing.
type HeartbeatRequest struct {
	WorkerID string `json:"worker_id"`
	// JobID and Generation name what the worker runs now ("" and 0: nothing).
	JobID      string `json:"job_id,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	// Step is the last optimizer step the worker completed in that generation.
	Step int64 `json:"step,omitempty"`
}

// HeartbeatResponse carries the worker's current instruction.
type HeartbeatResponse struct {
	// Assignment is what the worker must run now; nil means nothing.
	Assignment *Assignment `json:"assignment,omitempty"`
}

// Assignment is one worker's part in one generation of one job: everything
// it needs to train without asking the coordinator again.
type Assignment struct {
	JobID string `json:"job_id"`
	// Spec is the job YAML exactly as submitted; ParseSpec decodes it.
	Spec string `json:"spec"`
	// Generation numbers the job's generations from 1; every change of
	// membership forms a new one.
	Generation uint64 `json:"generation"`
	Rank       int    `json:"rank"`
	WorldSize  int    `json:"world_size"`
	// Peers are the collective addresses of all ranks, in rank order
	// (Peers[Rank] is this worker's own), and Workers their worker ids.
	Peers   []string `json:"peers"`
	Workers []string `json:"workers"`
	// StartStep is the optimizer step the generation starts after: 0 for a
	// fresh job, the checkpoint's step when resuming.
	StartStep int64 `json:"start_step"`
	// Data is how this generation reads the dataset.
	Data DataPlan `json:"data"`
	// GradAccum is the micro-batches each rank accumulates per optimizer
	// step: GlobalBatch = LocalBatch · WorldSize · GradAccum exactly.
	GradAccum int `json:"grad_accum"`
	// ResumeFrom is the checkpoint to load; nil means start as the spec says
	// (fresh weights, model.from_checkpoint or checkpoint.restore_from).
	ResumeFrom *Checkpoint `json:"resume_from,omitempty"`
}

// DataPlan says which samples a generation consumes. Samples are numbered by
// global position in the job's sample stream (epoch-wise shuffled from the
// job seed); each optimizer step consumes GlobalBatch consecutive positions,
// split across ranks by the data package's rank sharding for WorldSize. A new
// generation with another world size continues from StartSample, so no
// sample is repeated or skipped.
type DataPlan struct {
	// StartSample is the global sample position the generation starts at.
	StartSample int64 `json:"start_sample"`
	GlobalBatch int   `json:"global_batch"`
	LocalBatch  int   `json:"local_batch"`
	WorldSize   int   `json:"world_size"`
}

// ParseSpec decodes the assignment's job spec. The coordinator validated it
// at submission, so an error here means the two sides run different
// versions of jobspec.
func (a *Assignment) ParseSpec() (*jobspec.Spec, error) {
	s, err := jobspec.Parse([]byte(a.Spec))
	if err != nil {
		return nil, fmt.Errorf("api: job %s generation %d: spec: %w", a.JobID, a.Generation, err)
	}
	return s, nil
}

// Checkpoint is a complete checkpoint on storage every worker can read.
type Checkpoint struct {
	Path string `json:"path"`
	// Checksum is the checkpoint's checksum as the checkpoint package
	// writes it, so a reader can verify it loads what was reported.
	Checksum string `json:"checksum,omitempty"`
	// Step is the optimizer steps completed when it was written.
	Step int64 `json:"step"`
	// SamplesSeen is the global sample position after Step.
	SamplesSeen int64 `json:"samples_seen"`
}

// ReportKind says what a Report is about. The zero value is invalid.
type ReportKind string

// The report kinds.
const (
	// ReportCheckpoint: Checkpoint is complete (fsynced, renamed).
	ReportCheckpoint ReportKind = "checkpoint"
	// ReportProgress: the generation completed Step.
	ReportProgress ReportKind = "progress"
	// ReportFailed: the generation cannot continue on this worker (Error).
	ReportFailed ReportKind = "failed"
	// ReportFinished: the job completed its last step (Step).
	ReportFinished ReportKind = "finished"
)

// Report tells the coordinator something happened in a generation.
type Report struct {
	WorkerID   string     `json:"worker_id"`
	JobID      string     `json:"job_id"`
	Generation uint64     `json:"generation"`
	Kind       ReportKind `json:"kind"`
	Step       int64      `json:"step,omitempty"`
	// Checkpoint is set for ReportCheckpoint (and may be for ReportFinished:
	// the final checkpoint).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Error says why, for ReportFailed.
	Error string `json:"error,omitempty"`
	// Fatal marks a failure no new generation can fix (bad data, a model
	// that cannot load): the job fails. A lost peer is not fatal: the
	// coordinator forms a new generation.
	Fatal bool `json:"fatal,omitempty"`
	// LostPeer is the worker id of the peer a non-fatal failure lost, when
	// the collective knows it. The coordinator then declares that worker
	// lost as soon as it misses a few heartbeats (SuspectHeartbeats), not
	// after the whole heartbeat timeout.
	LostPeer string `json:"lost_peer,omitempty"`
}

// SuspectHeartbeats is how many heartbeat intervals a worker named as
// Report.LostPeer has to prove it is alive.
const SuspectHeartbeats = 3

// Validate names the first missing or malformed field.
func (r Report) Validate() error {
	switch {
	case r.WorkerID == "":
		return fmt.Errorf("api: report: worker_id is empty")
	case r.JobID == "":
		return fmt.Errorf("api: report from %s: job_id is empty", r.WorkerID)
	case r.Generation == 0:
		return fmt.Errorf("api: report from %s: generation is 0", r.WorkerID)
	}
	switch r.Kind {
	case ReportCheckpoint:
		if r.Checkpoint == nil || r.Checkpoint.Path == "" {
			return fmt.Errorf("api: checkpoint report from %s: checkpoint.path is empty", r.WorkerID)
		}
	case ReportProgress, ReportFinished:
	case ReportFailed:
		if r.Error == "" {
			return fmt.Errorf("api: failed report from %s: error is empty", r.WorkerID)
		}
	default:
		return fmt.Errorf("api: report from %s: kind %q is not checkpoint, progress, failed or finished", r.WorkerID, r.Kind)
	}
	return nil
}

// ReportResponse acknowledges a report.
type ReportResponse struct {
	// Accepted is false when the report was about a generation that is no
	// longer current (or a job that ended); it changed nothing.
	Accepted bool `json:"accepted"`
}

// LeaveRequest announces a worker is shutting down on purpose.
type LeaveRequest struct {
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason,omitempty"`
}

// LeaveResponse acknowledges a leave.
type LeaveResponse struct{}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
	// Code is a stable machine-readable reason (see the Code* constants).
	Code string `json:"code,omitempty"`
	// Leader is the leader's HTTP address when known (for 503 not_leader).
	Leader string `json:"leader,omitempty"`
}

// Error codes in ErrorResponse.Code.
const (
	CodeUnknownWorker = "unknown_worker"
	CodeNoLeader      = "no_leader"
	CodeBadRequest    = "bad_request"
	CodeInternal      = "internal"
)

// Duration is a time.Duration that encodes as a Go duration string ("2s").
type Duration time.Duration

// MarshalText encodes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText decodes a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("api: duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}
