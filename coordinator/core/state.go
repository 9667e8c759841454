package core

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/telemetry"
)

// Config holds the decision parameters every replica must agree on.
type Config struct {
	// MaxRestarts is how many generations of one job may end in a failure
	// before the job fails (the restart budget of dependencies.md §6.7, kept
	// per job in the coordinator so no worker can bypass it).
	MaxRestarts int `json:"max_restarts"`
	// KeepEnded is how many ended (finished, failed, cancelled) jobs the
	// state remembers; older ones are forgotten (their specs and final
	// statuses stay in etcd), so the state and its snapshots stay small.
	KeepEnded int `json:"keep_ended"`
}

// Defaults for a zero Config.
const (
	DefaultMaxRestarts = 20
	DefaultKeepEnded   = 1000
)

// Worker is a registered worker.
type Worker struct {
	Info api.RegisterRequest `json:"info"`
	// Seq orders registrations: new members join a job in this order.
	Seq          uint64    `json:"seq"`
	RegisteredAt time.Time `json:"registered_at"`
	// Job is the job whose current generation counts this worker ("": idle).
	Job string `json:"job,omitempty"`
}

// Job is one submitted job and its current generation.
type Job struct {
	ID    string       `json:"id"`
	Spec  string       `json:"spec"`
	State api.JobState `json:"state"`
	// Generation is the current (or last) generation; Members its worker
	// ids in rank order.
	Generation uint64   `json:"generation,omitempty"`
	Members    []string `json:"members,omitempty"`
	GradAccum  int      `json:"grad_accum,omitempty"`
	// StartStep, StartSample and ResumeFrom are where the current
	// generation started.
	StartStep   int64           `json:"start_step,omitempty"`
	StartSample int64           `json:"start_sample,omitempty"`
	ResumeFrom  *api.Checkpoint `json:"resume_from,omitempty"`
	// Step is the newest step reported in the current generation.
	Step           int64           `json:"step,omitempty"`
	LastCheckpoint *api.Checkpoint `json:"last_checkpoint,omitempty"`
	Restarts       int             `json:"restarts,omitempty"`
	Error          string          `json:"error,omitempty"`
	// Stopped lists the members of a failed generation known to have
	// stopped (they reported the failure, or were lost); the next
	// generation forms once every member has.
	Stopped     []string  `json:"stopped,omitempty"`
	SubmittedAt time.Time `json:"submitted_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`

	spec *jobspec.Spec // parsed Spec; nil when the spec is invalid
}

// State is everything the coordinator has decided. The zero value is not
// usable; call NewState. Exported fields are the snapshot (JSON).
type State struct {
	Config  Config             `json:"config"`
	Jobs    map[string]*Job    `json:"jobs"`
	Workers map[string]*Worker `json:"workers"`
	// Order lists job ids in submission order: earlier jobs get workers first.
	Order []string `json:"order"`
	// Revision is the newest etcd revision of the job prefix applied; the
	// leader resumes its watch after it.
	Revision  int64    `json:"revision"`
	WorkerSeq uint64   `json:"worker_seq"`
	ActionSeq uint64   `json:"action_seq"`
	Outbox    []Action `json:"outbox"`
	// Coordinators maps replica ids to the HTTP address they announced
	// when they became leader.
	Coordinators map[string]string `json:"coordinators"`

	out []Action // actions of the Step in progress
}

// NewState returns an empty state.
func NewState(cfg Config) *State {
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = DefaultMaxRestarts
	}
	if cfg.KeepEnded <= 0 {
		cfg.KeepEnded = DefaultKeepEnded
	}
	return &State{Config: cfg, Jobs: map[string]*Job{}, Workers: map[string]*Worker{}, Coordinators: map[string]string{}}
}

// Encode writes the state as JSON (the raft snapshot).
func (s *State) Encode(w io.Writer) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("core: encoding state: %w", err)
	}
	return nil
}

// DecodeState reads what Encode wrote.
func DecodeState(r io.Reader) (*State, error) {
	s := NewState(Config{})
	if err := json.NewDecoder(r).Decode(s); err != nil {
		return nil, fmt.Errorf("core: decoding state: %w", err)
	}
	if s.Jobs == nil {
		s.Jobs = map[string]*Job{}
	}
	if s.Workers == nil {
		s.Workers = map[string]*Worker{}
	}
	if s.Coordinators == nil {
		s.Coordinators = map[string]string{}
	}
	for _, j := range s.Jobs {
		j.spec, _ = jobspec.Parse([]byte(j.Spec)) // invalid specs were failed at submission
	}
	return s, nil
}

// Step applies ev and returns the actions it calls for (also appended to
// the outbox).
func (s *State) Step(ev Event) []Action {
	s.out = nil
	switch e := ev.(type) {
	case JobSubmitted:
		s.Revision = max(s.Revision, e.Revision)
		s.submit(e)
	case JobCancelled:
		s.Revision = max(s.Revision, e.Revision)
		s.cancel(e)
	case WorkerRegistered:
		s.register(e)
	case WorkerLost:
		s.lose(e.WorkerID, e.Reason, e.At)
	case Reported:
		s.report(e)
	case ReformDue:
		if j := s.Jobs[e.JobID]; j != nil && j.State == api.JobReforming && j.Generation == e.Generation {
			s.reform(j, e.At)
		}
	case MemberStopped:
		if j := s.Jobs[e.JobID]; j != nil && j.State == api.JobReforming && j.Generation == e.Generation &&
			slices.Contains(j.Members, e.WorkerID) && !slices.Contains(j.Stopped, e.WorkerID) {
			j.Stopped = append(j.Stopped, e.WorkerID)
		}
	case ActionsDone:
		i := 0
		for i < len(s.Outbox) && s.Outbox[i].Seq <= e.Seq {
			i++
		}
		s.Outbox = slices.Clone(s.Outbox[i:])
		return nil
	case LeaderAnnounced:
		s.Coordinators[e.ID] = e.HTTP
		return nil
	default:
		panic(fmt.Sprintf("core: Step: unknown event %T", ev))
	}
	if at := eventTime(ev); !at.IsZero() {
		s.schedule(at)
		s.forgetEnded()
	}
	out := s.out
	s.out = nil
	return out
}

func eventTime(ev Event) time.Time {
	switch e := ev.(type) {
	case JobSubmitted:
		return e.At
	case JobCancelled:
		return e.At
	case WorkerRegistered:
		return e.At
	case WorkerLost:
		return e.At
	case Reported:
		return e.At
	case ReformDue:
		return e.At
	case MemberStopped:
		return e.At
	}
	return time.Time{}
}

func (s *State) submit(e JobSubmitted) {
	if _, ok := s.Jobs[e.JobID]; ok {
		return // a spec key written again; the job keeps the spec it started with
	}
	j := &Job{ID: e.JobID, Spec: e.Spec, State: api.JobPending, SubmittedAt: e.At}
	s.Jobs[j.ID] = j
	s.Order = append(s.Order, j.ID)
	if err := api.CheckJobID(j.ID); err != nil {
		s.fail(j, err.Error(), e.At)
		return
	}
	spec, err := jobspec.Parse([]byte(e.Spec))
	if err != nil {
		if p := e.Previous; p != nil && p.State.Terminal() {
			s.adopt(j, p) // it failed (or ended) before; etcd says so already
			return
		}
		s.fail(j, "invalid job spec: "+err.Error(), e.At)
		return
	}
	j.spec = spec
	if p := e.Previous; p != nil {
		s.adopt(j, p)
		if j.State.Terminal() {
			return // etcd already says how it ended
		}
	}
	s.writeStatus(j, e.At)
}

// adopt takes over what a lost coordinator state had recorded for j.
func (s *State) adopt(j *Job, p *api.JobStatus) {
	// Statuses written from now on must outrank the ones in etcd.
	s.ActionSeq = max(s.ActionSeq, p.Version)
	j.Generation, j.Restarts, j.Error = p.Generation, p.Restarts, p.Error
	j.SubmittedAt, j.StartedAt, j.FinishedAt = p.SubmittedAt, p.StartedAt, p.FinishedAt
	if c := p.LastCheckpoint; c != nil {
		cc := *c
		j.LastCheckpoint, j.Step = &cc, c.Step
	}
	if p.State.Terminal() {
		j.State, j.Step = p.State, p.Step
	}
}

func (s *State) cancel(e JobCancelled) {
	j := s.Jobs[e.JobID]
	if j == nil || j.State.Terminal() {
		return
	}
	s.release(j)
	j.State, j.FinishedAt = api.JobCancelled, e.At
	if e.Reason != "" {
		j.Error = e.Reason
	}
	s.publish(j, telemetry.Event{Time: e.At, Kind: telemetry.EventCancelled, Generation: j.Generation, Step: j.Step, Detail: e.Reason})
	s.writeStatus(j, e.At)
}

func (s *State) register(e WorkerRegistered) {
	id := e.Worker.WorkerID
	if w := s.Workers[id]; w != nil && e.Worker.Incarnation != "" && w.Info.Incarnation == e.Worker.Incarnation {
		return // the same process asking again (a retried request)
	}
	if w := s.Workers[id]; w != nil && w.Job != "" {
		// Registering means the worker runs nothing: its old process is gone.
		s.lose(id, "worker "+id+" registered again (restarted)", e.At)
	}
	s.WorkerSeq++
	s.Workers[id] = &Worker{Info: e.Worker, Seq: s.WorkerSeq, RegisteredAt: e.At}
}

// lose removes a worker; the generation that counted it ends.
func (s *State) lose(id, reason string, at time.Time) {
	w := s.Workers[id]
	if w == nil {
		return
	}
	delete(s.Workers, id)
	j := s.Jobs[w.Job]
	if j == nil {
		return
	}
	rank := slices.Index(j.Members, id)
	s.publish(j, telemetry.Event{Time: at, Kind: telemetry.EventWorkerLost, Generation: j.Generation,
		Step: j.Step, Worker: id, Rank: &rank, Error: reason})
	switch j.State {
	case api.JobRunning:
		// The others stop first (told by their next heartbeat), so what they
		// still report — rank 0's checkpoint of its last complete step —
		// is what the next generation resumes from.
		s.endGeneration(j, fmt.Sprintf("generation %d lost worker %s: %s", j.Generation, id, reason), at)
		if j.State == api.JobReforming {
			j.Stopped = []string{id}
		}
	case api.JobReforming:
		if !slices.Contains(j.Stopped, id) {
			j.Stopped = append(j.Stopped, id)
		}
	}
}

// endGeneration counts a failed generation against the restart budget and
// leaves the job Reforming (or Failed when the budget is spent).
func (s *State) endGeneration(j *Job, reason string, at time.Time) {
	j.Restarts++
	j.Error = reason
	if j.Restarts > s.Config.MaxRestarts {
		s.fail(j, fmt.Sprintf("%d generations failed (restart budget %d); last: %s", j.Restarts, s.Config.MaxRestarts, reason), at)
		return
	}
	j.State = api.JobReforming
	j.Stopped = nil
	s.writeStatus(j, at)
}

// ReportIsCurrent reports whether r is about the current generation of a
// job that is running it, from one of its members; other reports are stale
// and Step ignores them. While the generation re-forms, what its members
// still finished counts: a failure, a checkpoint that was complete, the
// last step.
func (s *State) ReportIsCurrent(r api.Report) bool {
	j := s.Jobs[r.JobID]
	if j == nil || j.Generation != r.Generation || !slices.Contains(j.Members, r.WorkerID) {
		return false
	}
	return j.State == api.JobRunning || j.State == api.JobReforming && r.Kind != api.ReportProgress
}

func (s *State) report(e Reported) {
	r := e.Report
	if !s.ReportIsCurrent(r) {
		return
	}
	j := s.Jobs[r.JobID]
	switch r.Kind {
	case api.ReportProgress:
		if r.Step > j.Step {
			j.Step = r.Step
			s.writeStatus(j, e.At)
		}
	case api.ReportCheckpoint:
		c := *r.Checkpoint
		if j.LastCheckpoint != nil && c.Step <= j.LastCheckpoint.Step {
			return
		}
		j.LastCheckpoint = &c
		j.Step = max(j.Step, c.Step)
		s.publish(j, telemetry.Event{Time: e.At, Kind: telemetry.EventCheckpointWritten, Generation: j.Generation,
			Step: c.Step, Worker: r.WorkerID, Checkpoint: c.Path})
		s.writeStatus(j, e.At)
	case api.ReportFinished:
		j.Step = max(j.Step, r.Step)
		if r.Checkpoint != nil && (j.LastCheckpoint == nil || r.Checkpoint.Step > j.LastCheckpoint.Step) {
			c := *r.Checkpoint
			j.LastCheckpoint = &c
		}
		s.release(j)
		j.State, j.FinishedAt, j.Error = api.JobFinished, e.At, ""
		s.publish(j, telemetry.Event{Time: e.At, Kind: telemetry.EventFinished, Generation: j.Generation,
			Step: j.Step, Worker: r.WorkerID, Checkpoint: checkpointPath(j.LastCheckpoint)})
		s.writeStatus(j, e.At)
	case api.ReportFailed:
		if r.Fatal {
			s.fail(j, fmt.Sprintf("worker %s (generation %d): %s", r.WorkerID, r.Generation, r.Error), e.At)
			return
		}
		if j.State == api.JobRunning {
			s.endGeneration(j, fmt.Sprintf("generation %d failed on worker %s: %s", j.Generation, r.WorkerID, r.Error), e.At)
		}
		if j.State == api.JobReforming && !slices.Contains(j.Stopped, r.WorkerID) {
			j.Stopped = append(j.Stopped, r.WorkerID)
		}
	}
}

func checkpointPath(c *api.Checkpoint) string {
	if c == nil {
		return ""
	}
	return c.Path
}

// fail ends j for good.
func (s *State) fail(j *Job, reason string, at time.Time) {
	s.release(j)
	j.State, j.Error, j.FinishedAt = api.JobFailed, reason, at
	if api.CheckJobID(j.ID) == nil {
		s.publish(j, telemetry.Event{Time: at, Kind: telemetry.EventFailed, Generation: j.Generation, Step: j.Step, Error: reason})
	}
	s.writeStatus(j, at)
}

// release makes j's members idle.
func (s *State) release(j *Job) {
	for _, id := range j.Members {
		if w := s.Workers[id]; w != nil && w.Job == j.ID {
			w.Job = ""
		}
	}
}

// forgetEnded drops the oldest ended jobs beyond Config.KeepEnded. Should
// etcd be relisted later, their terminal statuses keep them from running
// again (JobSubmitted.Previous).
func (s *State) forgetEnded() {
	ended := 0
	for _, id := range s.Order {
		if s.Jobs[id].State.Terminal() {
			ended++
		}
	}
	if ended <= s.Config.KeepEnded {
		return
	}
	keep := s.Order[:0:0]
	for _, id := range s.Order {
		if ended > s.Config.KeepEnded && s.Jobs[id].State.Terminal() {
			delete(s.Jobs, id)
			ended--
			continue
		}
		keep = append(keep, id)
	}
	s.Order = keep
}

// schedule forms every generation that can form now: first for jobs that
// wait (in submission order), then growth of running jobs at a point where
// re-forming loses no work.
func (s *State) schedule(at time.Time) {
	for _, id := range s.Order {
		j := s.Jobs[id]
		if j.spec == nil {
			continue // only a failed job, or a restored one this binary cannot parse
		}
		switch j.State {
		case api.JobPending:
			s.tryStart(j, at)
		case api.JobReforming:
			if s.allStopped(j) {
				s.reform(j, at)
			}
		}
	}
	for _, id := range s.Order {
		j := s.Jobs[id]
		if j.spec == nil || j.State != api.JobRunning || len(j.Members) >= j.spec.MaxWorkers || j.Step > j.checkpointStep() {
			continue
		}
		var spare []string
		for _, id := range s.idleFor(j) {
			if !s.wantedByWaitingJob(s.Workers[id]) {
				spare = append(spare, id)
			}
		}
		cands := append(s.survivors(j), spare...)
		if w := j.spec.WorldSizeFor(len(cands)); w > len(j.Members) {
			s.form(j, cands[:w], at)
		}
	}
}

// wantedByWaitingJob reports whether a pending job could run on w: such
// idle workers are kept for it instead of growing a running job, so a job
// that waits for min_workers is not starved by elastic growth.
func (s *State) wantedByWaitingJob(w *Worker) bool {
	for _, id := range s.Order {
		if j := s.Jobs[id]; j.spec != nil && j.State == api.JobPending && canRun(j, w) {
			return true
		}
	}
	return false
}

func canRun(j *Job, w *Worker) bool {
	return j.spec.Device != "cuda" || api.IsCUDA(w.Info.Device)
}

// checkpointStep is the step a re-formed generation would resume from.
func (j *Job) checkpointStep() int64 {
	if j.LastCheckpoint == nil {
		return 0
	}
	return j.LastCheckpoint.Step
}

func (s *State) allStopped(j *Job) bool {
	for _, id := range j.Members {
		if !slices.Contains(j.Stopped, id) {
			return false
		}
	}
	return true
}

func (s *State) tryStart(j *Job, at time.Time) {
	cands := s.idleFor(j)
	if w := j.spec.WorldSizeFor(len(cands)); w > 0 {
		s.form(j, cands[:w], at)
	}
}

// reform forms the next generation from the registered members and idle
// workers, or returns the job to Pending when too few are left.
func (s *State) reform(j *Job, at time.Time) {
	cands := append(s.survivors(j), s.idleFor(j)...)
	if w := j.spec.WorldSizeFor(len(cands)); w > 0 {
		s.form(j, cands[:w], at)
		return
	}
	s.release(j)
	j.State = api.JobPending
	s.writeStatus(j, at)
}

// survivors are j's members still registered, in rank order.
func (s *State) survivors(j *Job) []string {
	var ids []string
	for _, id := range j.Members {
		if w := s.Workers[id]; w != nil && w.Job == j.ID {
			ids = append(ids, id)
		}
	}
	return ids
}

// idleFor lists idle workers that can run j, in registration order.
func (s *State) idleFor(j *Job) []string {
	var ws []*Worker
	for _, w := range s.Workers {
		if w.Job == "" && canRun(j, w) {
			ws = append(ws, w)
		}
	}
	sort.Slice(ws, func(a, b int) bool { return ws[a].Seq < ws[b].Seq })
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.Info.WorkerID
	}
	return ids
}

// form starts generation j.Generation+1 on members (rank order), resuming
// from the last checkpoint.
func (s *State) form(j *Job, members []string, at time.Time) {
	accum, err := j.spec.StepScheduler.Accumulation(len(members))
	if err != nil {
		panic("core: form: world size chosen by WorldSizeFor has no accumulation: " + err.Error())
	}
	previous := j.Members
	s.release(j)
	first := j.Generation == 0
	j.Generation++
	j.Members = slices.Clone(members)
	for _, id := range members {
		s.Workers[id].Job = j.ID
	}
	j.GradAccum = accum
	j.Stopped = nil
	j.ResumeFrom, j.StartStep, j.StartSample = nil, 0, 0
	if c := j.LastCheckpoint; c != nil {
		cc := *c
		j.ResumeFrom, j.StartStep, j.StartSample = &cc, c.Step, c.SamplesSeen
	}
	j.Step = j.StartStep
	j.State = api.JobRunning
	if first {
		j.StartedAt = at
		s.publish(j, telemetry.Event{Time: at, Kind: telemetry.EventStarted, Generation: j.Generation})
	}
	for rank, id := range members {
		if !first && !slices.Contains(previous, id) {
			r := rank
			s.publish(j, telemetry.Event{Time: at, Kind: telemetry.EventWorkerJoined, Generation: j.Generation,
				Step: j.StartStep, Worker: id, Rank: &r})
		}
	}
	s.publish(j, telemetry.Event{Time: at, Kind: telemetry.EventGenerationFormed, Generation: j.Generation,
		Step: j.StartStep, WorldSize: len(members), Workers: slices.Clone(members),
		Checkpoint: checkpointPath(j.ResumeFrom), Detail: fmt.Sprintf("grad_accum=%d", accum)})
	s.writeStatus(j, at)
}

func (s *State) emit(a Action) {
	s.ActionSeq++
	a.Seq = s.ActionSeq
	s.out = append(s.out, a)
	s.Outbox = append(s.Outbox, a)
}

func (s *State) publish(j *Job, e telemetry.Event) {
	e.Job = j.ID
	s.emit(Action{Kind: PublishEvent, JobID: j.ID, Event: &e})
}

func (s *State) writeStatus(j *Job, at time.Time) {
	st := s.Status(j.ID)
	st.UpdatedAt = at
	st.Version = s.ActionSeq + 1 // the Seq emit gives the action carrying it
	s.emit(Action{Kind: WriteJobStatus, JobID: j.ID, Status: st})
}

// Status is job id's status as the coordinator writes it (UpdatedAt unset),
// or nil for an unknown job.
func (s *State) Status(id string) *api.JobStatus {
	j := s.Jobs[id]
	if j == nil {
		return nil
	}
	st := &api.JobStatus{
		JobID: j.ID, State: j.State, Step: j.Step, Generation: j.Generation,
		Workers: slices.Clone(j.Members), GradAccum: j.GradAccum, Restarts: j.Restarts, Error: j.Error,
		SubmittedAt: j.SubmittedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
	if j.State != api.JobRunning {
		st.Workers, st.GradAccum = nil, 0
	}
	if j.LastCheckpoint != nil {
		c := *j.LastCheckpoint
		st.LastCheckpoint = &c
	}
	if j.spec != nil {
		st.Name = j.spec.Name
		st.MaxSteps = int64(j.spec.StepScheduler.MaxSteps)
		st.MinWorkers, st.MaxWorkers = j.spec.MinWorkers, j.spec.MaxWorkers
	}
	return st
}

// Assignment is worker id's current instruction, nil when it should run
// nothing; known is false when the worker is not registered.
func (s *State) Assignment(id string) (a *api.Assignment, known bool) {
	w := s.Workers[id]
	if w == nil {
		return nil, false
	}
	j := s.Jobs[w.Job]
	if j == nil || j.State != api.JobRunning || j.spec == nil {
		return nil, true
	}
	rank := slices.Index(j.Members, id)
	peers := make([]string, len(j.Members))
	for i, m := range j.Members {
		peers[i] = s.Workers[m].Info.CollectiveAddr
	}
	a = &api.Assignment{
		JobID: j.ID, Spec: j.Spec, Generation: j.Generation, Rank: rank, WorldSize: len(j.Members),
		Peers: peers, Workers: slices.Clone(j.Members), StartStep: j.StartStep, GradAccum: j.GradAccum,
		Data: api.DataPlan{StartSample: j.StartSample, GlobalBatch: j.spec.StepScheduler.GlobalBatchSize,
			LocalBatch: j.spec.StepScheduler.LocalBatchSize, WorldSize: len(j.Members)},
	}
	if j.ResumeFrom != nil {
		c := *j.ResumeFrom
		a.ResumeFrom = &c
	}
	return a, true
}
