package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/hashicorp/raft"
)

// fsm is the raft state machine: it decodes each log entry into a core
// event and steps core.State with it. Every replica runs it; only the
// leader's loop acts on the outbox. Readers (HTTP handlers, the leader loop)
// call the query methods, which take the read lock.
type fsm struct {
	mu    sync.RWMutex
	state *core.State
	cfg   core.Config
	// applied is signalled (non-blocking) after every Apply and Restore.
	applied chan struct{}
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(cfg core.Config) *fsm {
	return &fsm{state: core.NewState(cfg), cfg: cfg, applied: make(chan struct{}, 1)}
}

// applyResult is what Apply returns through ApplyFuture.Response.
type applyResult struct {
	// accepted is false for a Reported event about a stale generation.
	accepted bool
	err      error
}

// Apply steps the state with the event in l. It is deterministic: the same
// log gives the same state on every replica.
func (f *fsm) Apply(l *raft.Log) any {
	ev, err := core.DecodeEvent(l.Data)
	if err != nil {
		// A command this binary cannot read must not be skipped silently, but
		// Apply cannot fail either; the proposer sees the error.
		return applyResult{err: fmt.Errorf("coordinator: raft entry %d: %w", l.Index, err)}
	}
	f.mu.Lock()
	res := applyResult{accepted: true}
	if r, ok := ev.(core.Reported); ok {
		res.accepted = f.state.ReportIsCurrent(r.Report)
	}
	f.state.Step(ev)
	f.mu.Unlock()
	f.signal()
	return res
}

func (f *fsm) signal() {
	select {
	case f.applied <- struct{}{}:
	default:
	}
}

// Snapshot encodes the state now (it is small: jobs and workers, not
// tensors), so Persist only writes bytes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var buf bytes.Buffer
	if err := f.state.Encode(&buf); err != nil {
		return nil, err
	}
	return snapshot(buf.Bytes()), nil
}

// Restore replaces the whole state.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := core.DecodeState(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	f.signal()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("coordinator: writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// Queries. Each copies what it returns.

func (f *fsm) assignment(workerID string) (*api.Assignment, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Assignment(workerID)
}

func (f *fsm) outbox() []core.Action {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.state.Outbox)
}

func (f *fsm) revision() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Revision
}

func (f *fsm) hasJob(id string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.state.Jobs[id]
	return ok
}

func (f *fsm) coordinatorHTTP(id string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Coordinators[id]
}

// workerView is what the leader loop needs about one worker.
type workerView struct {
	id  string
	job string
}

func (f *fsm) workers() []workerView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]workerView, 0, len(f.state.Workers))
	for id, w := range f.state.Workers {
		out = append(out, workerView{id: id, job: w.Job})
	}
	return out
}

// jobView is what the leader loop and the metrics need about one job.
type jobView struct {
	id         string
	state      api.JobState
	generation uint64
	step       int64
	members    []string
}

func (f *fsm) jobs() []jobView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]jobView, 0, len(f.state.Jobs))
	for _, id := range f.state.Order {
		j := f.state.Jobs[id]
		out = append(out, jobView{id: id, state: j.State, generation: j.Generation, step: j.Step, members: slices.Clone(j.Members)})
	}
	return out
}

func (f *fsm) jobStatus(id string) *api.JobStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Status(id)
}
