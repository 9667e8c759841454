package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// JobState is where a job is in its life.
type JobState string

// The job states. Finished, Failed and Cancelled are terminal.
const (
	// JobSubmitted: the spec is in etcd; the coordinator has not seen it yet
	// (fmctl shows this when there is no status key).
	JobSubmitted JobState = "submitted"
	// JobPending: accepted, waiting for min_workers available workers.
	JobPending JobState = "pending"
	// JobRunning: a generation is training.
	JobRunning JobState = "running"
	// JobReforming: the last generation ended (a worker was lost or failed);
	// the next one forms as soon as the survivors have stopped.
	JobReforming JobState = "reforming"
	JobFinished  JobState = "finished"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Terminal reports whether nothing more will happen to a job in state s.
func (s JobState) Terminal() bool {
	return s == JobFinished || s == JobFailed || s == JobCancelled
}

// JobStatus is what the coordinator writes to JobStatusKey(JobID) whenever
// the job changes, and what fmctl status/list show.
type JobStatus struct {
	// Version increases with every status the coordinator decides on; a
	// status is never replaced by one with a lower Version (a deposed
	// leader's late write loses).
	Version uint64   `json:"version"`
	JobID   string   `json:"job_id"`
	Name    string   `json:"name,omitempty"`
	State   JobState `json:"state"`
	// Step is the last optimizer step reported; MaxSteps the spec's (0 when
	// the job runs by epochs).
	Step     int64 `json:"step"`
	MaxSteps int64 `json:"max_steps,omitempty"`
	// Generation is the current (or last) generation; Workers its worker ids
	// in rank order; GradAccum its gradient accumulation.
	Generation uint64   `json:"generation,omitempty"`
	Workers    []string `json:"workers,omitempty"`
	GradAccum  int      `json:"grad_accum,omitempty"`
	// MinWorkers and MaxWorkers are the spec's bounds.
	MinWorkers int `json:"min_workers,omitempty"`
	MaxWorkers int `json:"max_workers,omitempty"`
	// LastCheckpoint is the newest complete checkpoint.
	LastCheckpoint *Checkpoint `json:"last_checkpoint,omitempty"`
	// Restarts counts generations that ended in a failure.
	Restarts int `json:"restarts,omitempty"`
	// Error says why the job failed (or the last generation ended).
	Error       string    `json:"error,omitempty"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
}

// DecodeJobStatus parses the JSON stored at a status key.
func DecodeJobStatus(b []byte) (*JobStatus, error) {
	var s JobStatus
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("api: decoding job status: %w", err)
	}
	return &s, nil
}

// CoordinatorStatus is GET /v1/status: who this replica is and who leads.
type CoordinatorStatus struct {
	ID string `json:"id"`
	// RaftState is Leader, Follower, Candidate or Shutdown.
	RaftState  string `json:"raft_state"`
	LeaderID   string `json:"leader_id,omitempty"`
	LeaderHTTP string `json:"leader_http,omitempty"`
	// Ready is what /readyz answers.
	Ready        bool   `json:"ready"`
	NotReady     string `json:"not_ready,omitempty"`
	AppliedIndex uint64 `json:"applied_index"`
	Jobs         int    `json:"jobs"`
	Workers      int    `json:"workers"`
}

// MembershipRequest names a replica to add (ID and RaftAddr) to, or remove
// (ID) from, the raft group.
type MembershipRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr,omitempty"`
}

// MembershipResponse is the raft configuration after a change.
type MembershipResponse struct {
	Servers []Member `json:"servers"`
}

// Member is one replica of the raft group.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	Voter    bool   `json:"voter"`
}
