package core

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

// Event is one input to State.Step. Every event carries the time it happened
// as data (At), stamped by whoever proposed it.
type Event interface {
	eventName() string
}

// JobSubmitted: a spec appeared at api.JobSpecKey(JobID) at etcd Revision.
type JobSubmitted struct {
	JobID    string    `json:"job_id"`
	Spec     string    `json:"spec"`
	Revision int64     `json:"revision"`
	At       time.Time `json:"at"`
	// Previous is the status etcd already held for a job this state has
	// never seen: the coordinators' raft data was lost and is being rebuilt
	// from etcd. A job that had ended stays as it was; a live one continues
	// after its last generation, from its last checkpoint.
	Previous *api.JobStatus `json:"previous,omitempty"`
}

// JobCancelled: a user asked to cancel JobID (api.JobCancelKey, or the spec
// was deleted) at etcd Revision.
type JobCancelled struct {
	JobID    string    `json:"job_id"`
	Reason   string    `json:"reason,omitempty"`
	Revision int64     `json:"revision"`
	At       time.Time `json:"at"`
}

// WorkerRegistered: a worker announced itself (and runs nothing).
type WorkerRegistered struct {
	Worker api.RegisterRequest `json:"worker"`
	At     time.Time           `json:"at"`
}

// WorkerLost: a worker missed its heartbeats, or left on purpose.
type WorkerLost struct {
	WorkerID string    `json:"worker_id"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// Reported: a worker reported a checkpoint, progress, a failure or the end.
type Reported struct {
	Report api.Report `json:"report"`
	At     time.Time  `json:"at"`
}

// ReformDue: a job has waited long enough (the leader's heartbeat timeout)
// for the members of its failed Generation to stop; form the next one from
// whoever is still registered.
type ReformDue struct {
	JobID      string    `json:"job_id"`
	Generation uint64    `json:"generation"`
	At         time.Time `json:"at"`
}

// LeaderAnnounced: replica ID leads and serves the worker API at HTTP;
// followers forward there.
type LeaderAnnounced struct {
	ID   string `json:"id"`
	HTTP string `json:"http"`
}

// MemberStopped: a member of a job's failed Generation said in a
// heartbeat that it no longer runs it (it was told to run nothing while
// the job re-forms), so the next generation need not wait for it.
type MemberStopped struct {
	JobID      string    `json:"job_id"`
	Generation uint64    `json:"generation"`
	WorkerID   string    `json:"worker_id"`
	At         time.Time `json:"at"`
}

// ActionsDone: the leader executed every outbox action up to Seq.
type ActionsDone struct {
	Seq uint64 `json:"seq"`
}

func (JobSubmitted) eventName() string     { return "job_submitted" }
func (JobCancelled) eventName() string     { return "job_cancelled" }
func (WorkerRegistered) eventName() string { return "worker_registered" }
func (WorkerLost) eventName() string       { return "worker_lost" }
func (Reported) eventName() string         { return "reported" }
func (ReformDue) eventName() string        { return "reform_due" }
func (MemberStopped) eventName() string    { return "member_stopped" }
func (ActionsDone) eventName() string      { return "actions_done" }
func (LeaderAnnounced) eventName() string  { return "leader_announced" }

// CommandVersion is the version of the encoding EncodeEvent writes. Decode
// refuses newer versions: an old binary must not guess at a new command.
const CommandVersion = 1

type envelope struct {
	V    int             `json:"v"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// EncodeEvent is the raft log entry for ev.
func EncodeEvent(ev Event) ([]byte, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("core: encoding %s: %w", ev.eventName(), err)
	}
	return json.Marshal(envelope{V: CommandVersion, Type: ev.eventName(), Data: data})
}

// DecodeEvent reverses EncodeEvent.
func DecodeEvent(b []byte) (Event, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("core: decoding command: %w", err)
	}
	if env.V < 1 || env.V > CommandVersion {
		return nil, fmt.Errorf("core: command version %d is not supported (this binary reads 1 to %d); upgrade every coordinator replica", env.V, CommandVersion)
	}
	var ev Event
	switch env.Type {
	case "job_submitted":
		ev = &JobSubmitted{}
	case "job_cancelled":
		ev = &JobCancelled{}
	case "worker_registered":
		ev = &WorkerRegistered{}
	case "worker_lost":
		ev = &WorkerLost{}
	case "reported":
		ev = &Reported{}
	case "reform_due":
		ev = &ReformDue{}
	case "member_stopped":
		ev = &MemberStopped{}
	case "actions_done":
		ev = &ActionsDone{}
	case "leader_announced":
		ev = &LeaderAnnounced{}
	default:
		return nil, fmt.Errorf("core: unknown command type %q", env.Type)
	}
	if err := json.Unmarshal(env.Data, ev); err != nil {
		return nil, fmt.Errorf("core: decoding %s: %w", env.Type, err)
	}
	return deref(ev), nil
}

// deref turns the pointer DecodeEvent filled into the value type Step
// switches on.
func deref(ev Event) Event {
	switch e := ev.(type) {
	case *JobSubmitted:
		return *e
	case *JobCancelled:
		return *e
	case *WorkerRegistered:
		return *e
	case *WorkerLost:
		return *e
	case *Reported:
		return *e
	case *ReformDue:
		return *e
	case *MemberStopped:
		return *e
	case *ActionsDone:
		return *e
	case *LeaderAnnounced:
		return *e
	}
	return ev
}
