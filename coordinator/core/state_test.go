package core

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/telemetry"
)

// run applies events in order and returns the state and all actions.
func run(t *testing.T, evs ...Event) (*State, []Action) {
	t.Helper()
	s := NewState(Config{MaxRestarts: 3})
	var all []Action
	for _, ev := range evs {
		all = append(all, s.Step(ev)...)
	}
	return s, all
}

func submit(id string, minW, maxW, global, local int, sec int) JobSubmitted {
	return JobSubmitted{JobID: id, Spec: testSpec(id, minW, maxW, global, local, 100, "cpu"), Revision: int64(sec + 1), At: at(sec)}
}

func reg(id string, sec int) WorkerRegistered {
	return WorkerRegistered{Worker: worker(id), At: at(sec)}
}

func rep(w, job string, gen uint64, kind api.ReportKind, step int64, sec int) Reported {
	r := api.Report{WorkerID: w, JobID: job, Generation: gen, Kind: kind, Step: step}
	switch kind {
	case api.ReportCheckpoint:
		r.Checkpoint = &api.Checkpoint{Path: fmt.Sprintf("ckpt/step_%03d", step), Step: step, SamplesSeen: step * 12}
	case api.ReportFailed:
		r.Error = "peer lost"
	}
	return Reported{Report: r, At: at(sec)}
}

func TestGenerationForming(t *testing.T) {
	tests := []struct {
		name      string
		evs       []Event
		job       string
		state     api.JobState
		gen       uint64
		members   []string
		accum     int
		startStep int64
	}{
		{"waits for min_workers", []Event{submit("j", 2, 4, 12, 2, 0), reg("a", 1)},
			"j", api.JobPending, 0, nil, 0, 0},
		{"starts at min_workers", []Event{submit("j", 2, 4, 12, 2, 0), reg("a", 1), reg("b", 2)},
			"j", api.JobRunning, 1, []string{"a", "b"}, 3, 0},
		{"workers first, job later", []Event{reg("a", 1), reg("b", 2), reg("c", 3), submit("j", 2, 4, 12, 2, 4)},
			"j", api.JobRunning, 1, []string{"a", "b", "c"}, 2, 0},
		// 12/(2·4) is not whole: 4 workers are available but 3 keep the global batch exact.
		{"largest exact world", []Event{reg("a", 1), reg("b", 2), reg("c", 3), reg("d", 4), submit("j", 1, 4, 12, 2, 5)},
			"j", api.JobRunning, 1, []string{"a", "b", "c"}, 2, 0},
		{"never above max_workers", []Event{reg("a", 1), reg("b", 2), reg("c", 3), submit("j", 1, 2, 12, 2, 5)},
			"j", api.JobRunning, 1, []string{"a", "b"}, 3, 0},
		{"join before any progress re-forms at once", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3)},
			"j", api.JobRunning, 2, []string{"a", "b", "c"}, 2, 0},
		{"join waits for the next checkpoint", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2),
			rep("a", "j", 1, api.ReportProgress, 5, 3), reg("c", 4)},
			"j", api.JobRunning, 1, []string{"a", "b"}, 3, 0},
		{"join at the checkpoint", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2),
			rep("a", "j", 1, api.ReportProgress, 5, 3), reg("c", 4), rep("a", "j", 1, api.ReportCheckpoint, 10, 5)},
			"j", api.JobRunning, 2, []string{"a", "b", "c"}, 2, 10},
		{"lost member: the others stop first", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportCheckpoint, 10, 4), rep("a", "j", 2, api.ReportProgress, 15, 5),
			WorkerLost{WorkerID: "b", Reason: "missed heartbeats", At: at(6)}},
			"j", api.JobReforming, 2, []string{"a", "b", "c"}, 2, 0},
		{"lost member re-forms from the checkpoint", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportCheckpoint, 10, 4), rep("a", "j", 2, api.ReportProgress, 15, 5),
			WorkerLost{WorkerID: "b", Reason: "missed heartbeats", At: at(6)}, stopped("a", "j", 2, 7), stopped("c", "j", 2, 7)},
			"j", api.JobRunning, 3, []string{"a", "c"}, 3, 10},
		{"checkpoint written after a loss is resumed from", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportCheckpoint, 10, 4), WorkerLost{WorkerID: "b", Reason: "left", At: at(5)},
			rep("a", "j", 2, api.ReportCheckpoint, 13, 6), rep("a", "j", 2, api.ReportFailed, 0, 6), stopped("c", "j", 2, 7)},
			"j", api.JobRunning, 3, []string{"a", "c"}, 3, 13},
		{"too few survivors: pending", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2),
			WorkerLost{WorkerID: "b", Reason: "left", At: at(3)}, stopped("a", "j", 1, 4)},
			"j", api.JobPending, 1, []string{"a", "b"}, 3, 0},
		{"failure report waits for every member", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportFailed, 0, 4), rep("c", "j", 2, api.ReportFailed, 0, 4)},
			"j", api.JobReforming, 2, []string{"a", "b", "c"}, 2, 0},
		{"failure then loss re-forms with the survivors", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportFailed, 0, 4), rep("c", "j", 2, api.ReportFailed, 0, 4),
			WorkerLost{WorkerID: "b", Reason: "missed heartbeats", At: at(6)}},
			"j", api.JobRunning, 3, []string{"a", "c"}, 3, 0},
		{"reform due includes silent members", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 2, api.ReportFailed, 0, 4), ReformDue{JobID: "j", Generation: 2, At: at(7)}},
			"j", api.JobRunning, 3, []string{"a", "b", "c"}, 2, 0},
		{"restarted worker rejoins", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			reg("b", 5), stopped("a", "j", 2, 6), stopped("c", "j", 2, 6)},
			"j", api.JobRunning, 3, []string{"a", "c", "b"}, 2, 0},
		{"fatal failure fails the job", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2),
			Reported{Report: api.Report{WorkerID: "b", JobID: "j", Generation: 1, Kind: api.ReportFailed, Error: "corrupt shard", Fatal: true}, At: at(3)}},
			"j", api.JobFailed, 1, []string{"a", "b"}, 3, 0},
		{"stale report is ignored", []Event{submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
			rep("a", "j", 1, api.ReportFailed, 0, 4)},
			"j", api.JobRunning, 2, []string{"a", "b", "c"}, 2, 0},
		{"finished", []Event{submit("j", 1, 1, 12, 2, 0), reg("a", 1), rep("a", "j", 1, api.ReportFinished, 100, 2)},
			"j", api.JobFinished, 1, []string{"a"}, 6, 0},
		{"cancelled", []Event{submit("j", 1, 1, 12, 2, 0), reg("a", 1), JobCancelled{JobID: "j", Revision: 9, At: at(2)}},
			"j", api.JobCancelled, 1, []string{"a"}, 6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := run(t, tc.evs...)
			j := s.Jobs[tc.job]
			if j.State != tc.state || j.Generation != tc.gen || !slices.Equal(j.Members, tc.members) ||
				j.GradAccum != tc.accum || j.StartStep != tc.startStep {
				t.Fatalf("job %s: state=%s gen=%d members=%v accum=%d start=%d; want state=%s gen=%d members=%v accum=%d start=%d (error %q)",
					tc.job, j.State, j.Generation, j.Members, j.GradAccum, j.StartStep,
					tc.state, tc.gen, tc.members, tc.accum, tc.startStep, j.Error)
			}
			checkInvariants(t, s)
		})
	}
}

// checkInvariants: a worker is counted by at most one running job, the
// global batch is exact, and every running member is registered.
func checkInvariants(t *testing.T, s *State) {
	t.Helper()
	owner := map[string]string{}
	for _, id := range s.Order {
		j := s.Jobs[id]
		if j.State != api.JobRunning && j.State != api.JobReforming {
			continue
		}
		ss := j.spec.StepScheduler
		if j.State == api.JobRunning && ss.LocalBatchSize*len(j.Members)*j.GradAccum != ss.GlobalBatchSize {
			t.Errorf("job %s: local %d × world %d × accum %d != global %d", id, ss.LocalBatchSize, len(j.Members), j.GradAccum, ss.GlobalBatchSize)
		}
		for _, m := range j.Members {
			if o, ok := owner[m]; ok {
				t.Errorf("worker %s is in jobs %s and %s", m, o, id)
			}
			owner[m] = id
			if w := s.Workers[m]; (w == nil && j.State == api.JobRunning) || (w != nil && w.Job != id) {
				t.Errorf("job %s member %s is not registered to it: %+v", id, m, w)
			}
		}
	}
	for id, w := range s.Workers {
		if w.Job != "" && owner[id] != w.Job {
			t.Errorf("worker %s says job %s but that job does not run it", id, w.Job)
		}
	}
}

func TestInvalidSpecFailsOnlyThatJob(t *testing.T) {
	s, acts := run(t,
		submit("good", 1, 1, 12, 2, 0),
		JobSubmitted{JobID: "bad", Spec: "name: x\nmin_workers: 1\nbogus_key: 3\n", Revision: 5, At: at(1)},
		reg("a", 2))
	bad := s.Jobs["bad"]
	if bad.State != api.JobFailed || !strings.Contains(bad.Error, "bogus_key") {
		t.Fatalf("bad job: state %s error %q; want failed naming bogus_key", bad.State, bad.Error)
	}
	if g := s.Jobs["good"]; g.State != api.JobRunning || !slices.Equal(g.Members, []string{"a"}) {
		t.Fatalf("good job disturbed: %+v", g)
	}
	var failedEvent bool
	for _, a := range acts {
		if a.Kind == PublishEvent && a.JobID == "bad" && a.Event.Kind == telemetry.EventFailed {
			failedEvent = true
		}
	}
	if !failedEvent {
		t.Fatal("no failed event for the bad job")
	}
	if s.Revision != 5 {
		t.Fatalf("Revision = %d, want 5", s.Revision)
	}
}

func TestRestartBudget(t *testing.T) {
	evs := []Event{submit("j", 1, 1, 12, 2, 0), reg("a", 1)}
	for gen := uint64(1); gen <= 4; gen++ {
		evs = append(evs, rep("a", "j", gen, api.ReportFailed, 0, int(gen)+1))
	}
	s, _ := run(t, evs...)
	j := s.Jobs["j"]
	if j.State != api.JobFailed || j.Restarts != 4 || !strings.Contains(j.Error, "restart budget 3") {
		t.Fatalf("after 4 failures with budget 3: state %s restarts %d error %q", j.State, j.Restarts, j.Error)
	}
	if s.Workers["a"].Job != "" {
		t.Fatal("worker of the failed job is not released")
	}
}

func TestJobsShareWorkersInSubmissionOrder(t *testing.T) {
	s, _ := run(t, submit("first", 2, 2, 12, 2, 0), submit("second", 1, 2, 12, 2, 1),
		reg("a", 2), reg("b", 3), reg("c", 4))
	// "second" starts with a alone (min 1); b is kept for "first", which
	// waits for min_workers, instead of growing "second"; c completes "first".
	checkInvariants(t, s)
	if f := s.Jobs["first"]; f.State != api.JobRunning || len(f.Members) != 2 {
		t.Fatalf("first: %s %v", f.State, f.Members)
	}
	// When first finishes, its workers let second grow.
	s.Step(rep(s.Jobs["first"].Members[0], "first", 1, api.ReportFinished, 100, 5))
	checkInvariants(t, s)
	if sec := s.Jobs["second"]; len(sec.Members) != 2 {
		t.Fatalf("second did not grow after first finished: %v", sec.Members)
	}
}

func TestCUDAJobWaitsForGPUWorkers(t *testing.T) {
	s := NewState(Config{})
	s.Step(JobSubmitted{JobID: "g", Spec: testSpec("g", 1, 1, 12, 2, 10, "cuda"), Revision: 1, At: at(0)})
	s.Step(reg("cpu0", 1))
	if s.Jobs["g"].State != api.JobPending {
		t.Fatalf("cuda job started on a cpu worker")
	}
	gpu := worker("gpu0")
	gpu.Device = "cuda:0"
	s.Step(WorkerRegistered{Worker: gpu, At: at(2)})
	if j := s.Jobs["g"]; j.State != api.JobRunning || j.Members[0] != "gpu0" {
		t.Fatalf("cuda job: %s %v", j.State, j.Members)
	}
}

func TestAssignment(t *testing.T) {
	s, _ := run(t, submit("j", 2, 3, 12, 2, 0), reg("a", 1), reg("b", 2), reg("c", 3),
		rep("a", "j", 2, api.ReportCheckpoint, 10, 4),
		WorkerLost{WorkerID: "a", Reason: "missed heartbeats", At: at(5)})
	if a, _ := s.Assignment("c"); a != nil {
		t.Fatalf("while the job re-forms c is assigned %+v; want nothing (stop)", a)
	}
	s.Step(stopped("b", "j", 2, 6))
	s.Step(stopped("c", "j", 2, 6))
	got, known := s.Assignment("c")
	if !known {
		t.Fatal("c unknown")
	}
	want := &api.Assignment{
		JobID: "j", Spec: s.Jobs["j"].Spec, Generation: 3, Rank: 1, WorldSize: 2,
		Peers: []string{"b:7100", "c:7100"}, Workers: []string{"b", "c"}, StartStep: 10, GradAccum: 3,
		Data:       api.DataPlan{StartSample: 120, GlobalBatch: 12, LocalBatch: 2, WorldSize: 2},
		ResumeFrom: &api.Checkpoint{Path: "ckpt/step_010", Step: 10, SamplesSeen: 120},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("assignment of c:\n got %+v\nwant %+v", got, want)
	}
	if a, known := s.Assignment("a"); a != nil || known {
		t.Fatalf("lost worker a: assignment %v known %v; want nil, false", a, known)
	}
}

func TestOutboxAndSnapshotRoundTrip(t *testing.T) {
	s, acts := run(t, submit("j", 1, 2, 12, 2, 0), reg("a", 1))
	if len(s.Outbox) != len(acts) || len(acts) == 0 {
		t.Fatalf("outbox has %d actions, Step returned %d", len(s.Outbox), len(acts))
	}
	for i, a := range acts {
		if a.Seq != uint64(i+1) {
			t.Fatalf("action %d has seq %d", i, a.Seq)
		}
	}
	s.Step(ActionsDone{Seq: acts[1].Seq})
	if len(s.Outbox) != len(acts)-2 || s.Outbox[0].Seq != acts[2].Seq {
		t.Fatalf("after ActionsDone{%d}: outbox %v", acts[1].Seq, s.Outbox)
	}
	var buf bytes.Buffer
	if err := s.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	r, err := DecodeState(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// The restored state decides exactly as the original.
	next := reg("b", 2)
	a1, a2 := s.Step(next), r.Step(next)
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(s.Jobs, r.Jobs) || !reflect.DeepEqual(s.Outbox, r.Outbox) {
		t.Fatalf("restored state diverged:\n%+v\n%+v", a1, a2)
	}
}

func TestEventEncodingRoundTrip(t *testing.T) {
	evs := []Event{submit("j", 1, 2, 12, 2, 0), JobCancelled{JobID: "j", Reason: "user", Revision: 3, At: at(1)},
		reg("a", 1), WorkerLost{WorkerID: "a", Reason: "r", At: at(2)}, rep("a", "j", 1, api.ReportCheckpoint, 10, 3),
		ReformDue{JobID: "j", Generation: 2, At: at(4)}, ActionsDone{Seq: 7}, LeaderAnnounced{ID: "c0", HTTP: "http://c0:7070"}}
	for _, ev := range evs {
		b, err := EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("%T: round trip gave %+v", ev, got)
		}
	}
	if _, err := DecodeEvent([]byte(`{"v":2,"type":"reported","data":{}}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version 2 command: err = %v", err)
	}
	if _, err := DecodeEvent([]byte(`{"v":1,"type":"nope","data":{}}`)); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown type: err = %v", err)
	}
}

func TestRebuildFromPreviousStatus(t *testing.T) {
	ckpt := &api.Checkpoint{Path: "/c/step_30", Step: 30, SamplesSeen: 360}
	s, acts := run(t,
		JobSubmitted{JobID: "ended", Spec: testSpec("ended", 1, 1, 12, 2, 100, "cpu"), Revision: 3, At: at(0),
			Previous: &api.JobStatus{Version: 40, JobID: "ended", State: api.JobFinished, Step: 100, Generation: 2}},
		JobSubmitted{JobID: "live", Spec: testSpec("live", 1, 1, 12, 2, 100, "cpu"), Revision: 3, At: at(0),
			Previous: &api.JobStatus{Version: 57, JobID: "live", State: api.JobRunning, Step: 34, Generation: 5, Restarts: 2, LastCheckpoint: ckpt}},
		reg("a", 1))
	if e := s.Jobs["ended"]; e.State != api.JobFinished || e.Step != 100 {
		t.Fatalf("ended job: %+v", e)
	}
	for _, a := range acts {
		if a.JobID == "ended" {
			t.Fatalf("an ended job produced an action: %+v", a)
		}
		if a.Kind == WriteJobStatus && a.Status.Version <= 57 {
			t.Fatalf("status version %d does not outrank etcd's 57", a.Status.Version)
		}
	}
	l := s.Jobs["live"]
	if l.State != api.JobRunning || l.Generation != 6 || l.StartStep != 30 || l.StartSample != 360 || l.Restarts != 2 {
		t.Fatalf("live job: %+v", l)
	}
}

func TestRegisterRetryKeepsTheGeneration(t *testing.T) {
	w := worker("a")
	w.Incarnation = "run-1"
	s, _ := run(t, submit("j", 1, 1, 12, 2, 0), WorkerRegistered{Worker: w, At: at(1)})
	s.Step(WorkerRegistered{Worker: w, At: at(2)}) // a retry
	if j := s.Jobs["j"]; j.Generation != 1 || j.Restarts != 0 {
		t.Fatalf("a retried registration re-formed the job: %+v", j)
	}
	w.Incarnation = "run-2" // the process restarted
	s.Step(WorkerRegistered{Worker: w, At: at(3)})
	if j := s.Jobs["j"]; j.Generation != 2 || j.Restarts != 1 {
		t.Fatalf("a restarted worker did not end its generation: %+v", j)
	}
}

func TestForgetEndedJobs(t *testing.T) {
	s := NewState(Config{KeepEnded: 2})
	for i, id := range []string{"j1", "j2", "j3", "j4"} {
		s.Step(JobSubmitted{JobID: id, Spec: testSpec(id, 1, 1, 4, 4, 10, "cpu"), Revision: int64(i + 1), At: at(i)})
	}
	s.Step(reg("a", 5))
	// j1 runs on a; cancel j2 and j3 while they wait, then finish j1.
	s.Step(JobCancelled{JobID: "j2", Revision: 6, At: at(6)})
	s.Step(JobCancelled{JobID: "j3", Revision: 7, At: at(7)})
	s.Step(rep("a", "j1", 1, api.ReportFinished, 10, 8))
	if _, ok := s.Jobs["j1"]; ok {
		t.Fatal("the oldest ended job is still remembered")
	}
	if !slices.Equal(s.Order, []string{"j2", "j3", "j4"}) || s.Jobs["j4"].State != api.JobRunning {
		t.Fatalf("order %v, j4 %s", s.Order, s.Jobs["j4"].State)
	}
}
