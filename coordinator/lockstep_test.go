package coordinator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/fmtrain/fmtrain/worker"
)

// lockstep drives the coordinator's decisions (core.State) and the workers'
// own state type (worker.Lifecycle) against each other synchronously, the
// way etcd-io/raft's tests drive a network of pure nodes: heartbeats carry
// assignments to lifecycles, lifecycles' actions start and stop training,
// and the test kills, isolates and heals workers in between.
type lockstep struct {
	t      *testing.T
	s      *core.State
	clock  time.Time
	lcs    map[string]*worker.Lifecycle
	runs   map[string]run // what each worker trains now
	cut    map[string]bool
	starts map[string][]worker.GenerationKey // every generation each worker started
}

type run struct {
	gen  worker.GenerationKey
	rank int
	peer []string // the generation's members
}

func newLockstep(t *testing.T) *lockstep {
	return &lockstep{t: t, s: core.NewState(core.Config{MaxRestarts: 1000}), clock: time.Unix(1e9, 0),
		lcs: map[string]*worker.Lifecycle{}, runs: map[string]run{}, cut: map[string]bool{}, starts: map[string][]worker.GenerationKey{}}
}

func (l *lockstep) step(ev core.Event) {
	l.s.Step(ev)
}

func (l *lockstep) now() time.Time {
	l.clock = l.clock.Add(time.Second)
	return l.clock
}

// start adds a worker process (a new one, or a restart after kill).
func (l *lockstep) start(id string) {
	l.lcs[id] = worker.NewLifecycle()
	delete(l.runs, id)
}

// kill ends the process; the coordinator hears of it by missed heartbeats.
func (l *lockstep) kill(id string) {
	delete(l.lcs, id)
	delete(l.runs, id)
	l.step(core.WorkerLost{WorkerID: id, Reason: "missed heartbeats", At: l.now()})
}

// round: every reachable worker heartbeats and acts on the reply; training
// whose ring lost a member fails and is reported.
func (l *lockstep) round() {
	ids := make([]string, 0, len(l.lcs))
	for id := range l.lcs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if l.cut[id] {
			continue
		}
		lc := l.lcs[id]
		a, known := l.s.Assignment(id)
		if !known {
			l.step(core.WorkerRegistered{Worker: api.RegisterRequest{WorkerID: id, Host: "h", Device: "cpu", CollectiveAddr: id}, At: l.now()})
			l.do(id, lc.Registered())
			a, _ = l.s.Assignment(id)
		}
		var key *worker.GenerationKey
		if a != nil {
			key = &worker.GenerationKey{Job: a.JobID, Generation: a.Generation}
		}
		l.do(id, lc.Assigned(key))
	}
	// The leader's rule: a member of a re-forming job whose heartbeat says it
	// runs something else has stopped (leader.go, dueEvents).
	for _, id := range ids {
		for _, j := range l.s.Jobs {
			if j.State != api.JobReforming || !slices.Contains(j.Members, id) || l.cut[id] {
				continue
			}
			if r, ok := l.runs[id]; !ok || r.gen != (worker.GenerationKey{Job: j.ID, Generation: j.Generation}) {
				l.step(core.MemberStopped{JobID: j.ID, Generation: j.Generation, WorkerID: id, At: l.now()})
			}
		}
	}
	// A ring with a member that is not training the same generation fails.
	for _, id := range ids {
		r, ok := l.runs[id]
		if !ok {
			continue
		}
		for _, p := range r.peer {
			if pr, ok := l.runs[p]; !ok || pr.gen != r.gen || l.cut[p] != l.cut[id] {
				l.step(core.Reported{At: l.now(), Report: api.Report{WorkerID: id, JobID: r.gen.Job, Generation: r.gen.Generation,
					Kind: api.ReportFailed, Error: "collective: peer lost"}})
				delete(l.runs, id)
				l.do(id, l.lcs[id].Ended(r.gen))
				break
			}
		}
	}
}

// do executes a lifecycle's actions the way the worker's driver would.
func (l *lockstep) do(id string, acts []worker.Action) {
	for _, act := range acts {
		switch act.Kind {
		case worker.ActionStart:
			a, _ := l.s.Assignment(id)
			if a == nil || a.JobID != act.Gen.Job || a.Generation != act.Gen.Generation {
				// The assignment moved on between the reply and the start:
				// the ring join fails at once.
				l.do(id, l.lcs[id].Ended(act.Gen))
				continue
			}
			if slices.Contains(l.starts[id], act.Gen) {
				l.t.Fatalf("%s started %v twice", id, act.Gen)
			}
			l.starts[id] = append(l.starts[id], act.Gen)
			l.runs[id] = run{gen: act.Gen, rank: a.Rank, peer: a.Workers}
		case worker.ActionStop:
			delete(l.runs, id)
			l.do(id, l.lcs[id].Ended(act.Gen))
		}
	}
}

// check: no two workers hold the same rank of the same generation, and no
// generation runs with more ranks than its world.
func (l *lockstep) check() {
	seen := map[string]string{}
	for id, r := range l.runs {
		key := fmt.Sprintf("%v/rank%d", r.gen, r.rank)
		if other, dup := seen[key]; dup {
			l.t.Fatalf("%s and %s both train %s", other, id, key)
		}
		seen[key] = id
		if r.peer[r.rank] != id {
			l.t.Fatalf("%s trains rank %d of %v, which belongs to %s", id, r.rank, r.gen, r.peer[r.rank])
		}
	}
}

// TestLockstepRandomFaults: under random kills, restarts, isolations and
// checkpoints, workers never share a rank or restart a generation, and once
// faults stop, every live worker trains the job's current generation.
func TestLockstepRandomFaults(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			l := newLockstep(t)
			l.step(core.JobSubmitted{JobID: "j", Spec: string(testSpec("j", 1, 4, 24, 2, 1000)), Revision: 1, At: l.now()})
			all := []string{"a", "b", "c", "d", "e"}
			for _, id := range all[:3] {
				l.start(id)
			}
			step := int64(0)
			for range 60 {
				id := all[rng.IntN(len(all))]
				_, alive := l.lcs[id]
				switch op := rng.IntN(6); {
				case op == 0 && alive:
					l.kill(id)
				case op == 1 && !alive:
					l.start(id)
				case op == 2 && alive && !l.cut[id]:
					l.cut[id] = true
				case op == 3 && l.cut[id]:
					// Cut off longer than the timeout: lost; then the network heals.
					l.step(core.WorkerLost{WorkerID: id, Reason: "missed heartbeats", At: l.now()})
					delete(l.cut, id)
				case op == 4:
					for wid, r := range l.runs {
						if r.rank == 0 {
							step += 10
							l.step(core.Reported{At: l.now(), Report: api.Report{WorkerID: wid, JobID: "j", Generation: r.gen.Generation,
								Kind: api.ReportCheckpoint, Checkpoint: &api.Checkpoint{Path: fmt.Sprint("c", step), Step: step, SamplesSeen: 24 * step}}})
						}
					}
				}
				l.round()
				l.check()
			}
			// Faults stop: heal everyone; the job converges.
			for id := range l.cut {
				l.step(core.WorkerLost{WorkerID: id, Reason: "missed heartbeats", At: l.now()})
				delete(l.cut, id)
			}
			for range 6 {
				l.round()
				l.check()
			}
			st := l.s.Status("j")
			if st.State != api.JobRunning {
				t.Fatalf("job %s after faults stopped (error %q)", st.State, st.Error)
			}
			if want := min(len(l.lcs), 4); len(st.Workers) != want {
				t.Fatalf("generation %d runs on %v with %d workers alive", st.Generation, st.Workers, len(l.lcs))
			}
			for _, id := range st.Workers {
				if r, ok := l.runs[id]; !ok || r.gen.Generation != st.Generation {
					t.Fatalf("%s does not train generation %d: %+v", id, st.Generation, r)
				}
			}
			for id, r := range l.runs {
				if !slices.Contains(st.Workers, id) {
					t.Fatalf("%s trains %v but is not a member", id, r.gen)
				}
			}
		})
	}
}
