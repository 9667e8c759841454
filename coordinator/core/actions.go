package core

import (
	"strconv"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/telemetry"
)

// ActionKind says what an Action asks the leader to do. The zero value is
// invalid.
type ActionKind int

// The action kinds.
const (
	// WriteJobStatus: put Status at api.JobStatusKey(JobID).
	WriteJobStatus ActionKind = 1 + iota
	// PublishEvent: publish Event on the job's NATS events subject, with
	// DedupID as the JetStream message id.
	PublishEvent
)

func (k ActionKind) String() string {
	switch k {
	case WriteJobStatus:
		return "write-status"
	case PublishEvent:
		return "publish-event"
	}
	return "ActionKind(" + strconv.Itoa(int(k)) + ")"
}

// Action is one thing the leader must do. Doing it twice has the same effect
// as doing it once.
type Action struct {
	// Seq orders actions; ActionsDone{Seq} acknowledges every action up to it.
	Seq    uint64           `json:"seq"`
	Kind   ActionKind       `json:"kind"`
	JobID  string           `json:"job_id"`
	Status *api.JobStatus   `json:"status,omitempty"`
	Event  *telemetry.Event `json:"event,omitempty"`
}

// DedupID is the JetStream message id of a PublishEvent action: the same
// action published twice (once by a leader that died before acknowledging
// it, once by its successor) is stored once.
func (a Action) DedupID() string {
	return "fmtrain-coord-" + a.JobID + "-" + strconv.FormatUint(a.Seq, 10)
}
