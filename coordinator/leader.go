package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// liveness is the leader's memory of its workers: when each last
// heartbeated and the newest step each job's members said they completed.
// It is not replicated; a new leader starts it afresh, giving every worker a
// full heartbeat timeout to reach it.
type liveness struct {
	mu           sync.Mutex
	lastSeen     map[string]time.Time
	progress     map[string]progressNote // by job
	reformSince  map[string]time.Time    // by job/generation
	lastProposed map[string]time.Time    // progress proposals, by job
	running      map[string]runNote      // what each worker said it runs, by worker
	stopSent     map[string]bool         // MemberStopped proposed, by job/generation/worker
	suspects     map[string]suspicion    // workers a peer reported lost, by worker
}

// suspicion: a peer reported the worker lost at this time.
type suspicion struct {
	at       time.Time
	reporter string
}

// suspect records that reporter's collective lost worker.
func (l *liveness) suspect(worker, reporter string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.suspects[worker]; !ok {
		l.suspects[worker] = suspicion{at: now, reporter: reporter}
	}
}

// runNote is what a worker's latest heartbeat said it runs.
type runNote struct {
	job        string
	generation uint64
	at         time.Time
}

type progressNote struct {
	generation uint64
	step       int64
	worker     string
}

func newLiveness() *liveness {
	return &liveness{lastSeen: map[string]time.Time{}, progress: map[string]progressNote{},
		reformSince: map[string]time.Time{}, lastProposed: map[string]time.Time{},
		running: map[string]runNote{}, stopSent: map[string]bool{}, suspects: map[string]suspicion{}}
}

// heartbeat records that a worker is alive and what it runs.
func (l *liveness) heartbeat(req api.HeartbeatRequest, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastSeen[req.WorkerID] = now
	l.running[req.WorkerID] = runNote{job: req.JobID, generation: req.Generation, at: now}
	if req.JobID == "" {
		return
	}
	p := l.progress[req.JobID]
	if req.Generation > p.generation || req.Generation == p.generation && req.Step > p.step {
		l.progress[req.JobID] = progressNote{generation: req.Generation, step: req.Step, worker: req.WorkerID}
	}
}

// lead runs while this replica leads: catch up, announce, then watch etcd,
// execute actions and check liveness until ctx ends.
func (n *Node) lead(ctx context.Context) {
	n.log.Info("became leader; catching up")
	for {
		// Serve nothing until everything the previous leader committed is
		// applied here, and followers know where to forward.
		err := n.raft.Barrier(applyTimeout).Error()
		if err == nil {
			_, err = n.propose(core.LeaderAnnounced{ID: n.opts.ID, HTTP: n.httpURL})
		}
		if err == nil {
			break
		}
		n.log.Warn("catching up after the election failed; retrying", "err", err)
		if sleep(ctx, 100*time.Millisecond); ctx.Err() != nil {
			return
		}
	}
	live := newLiveness()
	now := time.Now()
	for _, w := range n.fsm.workers() {
		live.lastSeen[w.id] = now
	}
	n.live.Store(live) // before leaderReady, so handlers record into this one
	n.leaderReady.Store(true)
	defer n.leaderReady.Store(false)
	n.markReady()
	n.log.Info("leading", "http", n.httpURL, "applied_index", n.raft.AppliedIndex())

	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){n.watchJobs, n.executeActions, n.checkLiveness} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
}

// watchJobs turns etcd job keys into events, resuming after the revision
// the state last applied; it relists when that revision was compacted away.
func (n *Node) watchJobs(ctx context.Context) {
	backoff := 100 * time.Millisecond
	rev := n.fsm.revision()
	relist := rev == 0
	for ctx.Err() == nil {
		if relist {
			listed, err := n.relist(ctx)
			if err != nil {
				n.log.Warn("listing jobs in etcd failed", "err", err)
				sleep(ctx, backoff)
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			rev, relist = listed, false
		}
		var err error
		rev, err = n.watchFrom(ctx, rev)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrCompacted):
			n.log.Warn("job watch revision was compacted; relisting", "revision", rev+1)
			relist = true
		case err != nil:
			n.log.Warn("job watch ended", "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// relist proposes every job etcd holds that the state lacks, and returns
// the revision of the listing.
func (n *Node) relist(ctx context.Context) (int64, error) {
	resp, err := n.opts.Etcd.Get(ctx, api.JobsPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	statuses := map[string]*api.JobStatus{}
	for _, kv := range resp.Kvs {
		if id, suffix, err := api.ParseJobKey(string(kv.Key)); err == nil && suffix == api.StatusKeySuffix {
			if st, err := api.DecodeJobStatus(kv.Value); err == nil {
				statuses[id] = st
			}
		}
	}
	var cancels []*mvccpb.KeyValue // applied after every spec: "cancel" sorts before "spec"
	for _, kv := range resp.Kvs {
		id, suffix, err := api.ParseJobKey(string(kv.Key))
		if err == nil && suffix == api.CancelKeySuffix {
			cancels = append(cancels, kv)
		}
		if err != nil || suffix != api.SpecKeySuffix || n.fsm.hasJob(id) {
			continue
		}
		// A status for a job the state never saw means the raft data was
		// lost: rebuild the job from what etcd recorded.
		if prev := statuses[id]; prev != nil {
			n.log.Warn("rebuilding job from its status in etcd", "job", id, "state", prev.State, "generation", prev.Generation)
		}
		ev := core.JobSubmitted{JobID: id, Spec: string(kv.Value), Revision: resp.Header.Revision, At: time.Now(), Previous: statuses[id]}
		if _, err := n.propose(ev); err != nil {
			return 0, err
		}
	}
	for _, kv := range cancels {
		if err := n.jobKeyChanged(string(kv.Key), kv.Value, false, resp.Header.Revision); err != nil {
			return 0, err
		}
	}
	return resp.Header.Revision, nil
}

// watchFrom watches the job prefix after revision rev and returns the last
// revision it handled.
func (n *Node) watchFrom(ctx context.Context, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range n.opts.Etcd.Watch(wctx, api.JobsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return rev, err
		}
		for _, ev := range wr.Events {
			if err := n.jobKeyChanged(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete, ev.Kv.ModRevision); err != nil {
				return rev, err
			}
			rev = ev.Kv.ModRevision
		}
	}
	return rev, ctx.Err()
}

// jobKeyChanged proposes the event a change of one job key means.
func (n *Node) jobKeyChanged(key string, value []byte, deleted bool, rev int64) error {
	id, suffix, err := api.ParseJobKey(key)
	if err != nil {
		return nil // not ours
	}
	now := time.Now()
	var ev core.Event
	switch {
	case suffix == api.SpecKeySuffix && !deleted:
		if n.fsm.hasJob(id) {
			return nil
		}
		ev = core.JobSubmitted{JobID: id, Spec: string(value), Revision: rev, At: now}
	case suffix == api.SpecKeySuffix && deleted:
		ev = core.JobCancelled{JobID: id, Reason: "job spec deleted from etcd", Revision: rev, At: now}
	case suffix == api.CancelKeySuffix && !deleted:
		ev = core.JobCancelled{JobID: id, Reason: string(value), Revision: rev, At: now}
	default:
		return nil
	}
	_, err = n.propose(ev)
	return err
}

// executeActions does what the outbox says, then acknowledges it. A status
// is written only if etcd holds an older one; an event is published with a
// de-duplication id, so doing an action again (after a leader change)
// changes nothing.
func (n *Node) executeActions(ctx context.Context) {
	var js jetstream.JetStream
	if n.opts.NATS != nil {
		var err error
		if js, err = jetstream.New(n.opts.NATS); err == nil {
			err = telemetry.EnsureStream(ctx, js, telemetry.StreamOptions{})
		}
		if err != nil {
			n.log.Warn("NATS JetStream unavailable; job events will be retried", "err", err)
		}
	}
	failures := map[uint64]int{} // event publish attempts that failed, by action seq
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.fsm.applied:
		case <-retry.C:
		}
		acts := n.fsm.outbox()
		if len(acts) == 0 {
			continue
		}
		done, err := n.execute(ctx, js, acts, failures)
		if err != nil {
			n.log.Warn("executing coordinator actions", "err", err)
		}
		if done > 0 {
			if _, err := n.propose(core.ActionsDone{Seq: done}); err != nil {
				n.log.Warn("acknowledging actions", "err", err)
			}
		}
	}
}

// maxPublishAttempts bounds how long an event that cannot be published holds
// up the outbox: after that it is logged and dropped (statuses never are).
const maxPublishAttempts = 5

// execute carries out acts and returns the Seq up to which all are done.
// Statuses go first and never wait for NATS: each job's newest status is
// written (idempotent, so writing it again in a later round is harmless);
// then events are published in order until one fails.
func (n *Node) execute(ctx context.Context, js jetstream.JetStream, acts []core.Action, failures map[uint64]int) (uint64, error) {
	newest := map[string]core.Action{}
	for _, a := range acts {
		if a.Kind == core.WriteJobStatus {
			newest[a.JobID] = a
		}
	}
	for _, a := range newest {
		if err := n.writeStatus(ctx, a.Status); err != nil {
			return 0, err
		}
		n.metrics.statusWrites.Inc()
	}
	var done uint64
	for _, a := range acts {
		if a.Kind == core.PublishEvent {
			if failures[a.Seq] == 0 {
				logEvent(n.log, a.Event)
			}
			if js != nil {
				if err := publishEvent(ctx, js, a); err != nil {
					failures[a.Seq]++
					if failures[a.Seq] < maxPublishAttempts {
						return done, err
					}
					n.log.Error("dropping job event after repeated publish failures", "job", a.JobID, "kind", a.Event.Kind, "err", err)
				}
				delete(failures, a.Seq)
				n.metrics.eventsPublished.Inc()
			}
		}
		done = a.Seq
	}
	return done, nil
}

func publishEvent(ctx context.Context, js jetstream.JetStream, a core.Action) error {
	data, err := json.Marshal(a.Event)
	if err != nil {
		return fmt.Errorf("coordinator: encoding %s event: %w", a.Event.Kind, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.Publish(pctx, telemetry.EventsSubject(a.JobID), data, jetstream.WithMsgID(a.DedupID())); err != nil {
		return fmt.Errorf("coordinator: publishing %s event of job %s: %w", a.Event.Kind, a.JobID, err)
	}
	return nil
}

// writeStatus puts st unless etcd already holds a status at least as new.
func (n *Node) writeStatus(ctx context.Context, st *api.JobStatus) error {
	key := api.JobStatusKey(st.JobID)
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("coordinator: encoding status of %s: %w", st.JobID, err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := n.opts.Etcd.Get(wctx, key)
		if err != nil {
			cancel()
			return fmt.Errorf("coordinator: reading status of %s: %w", st.JobID, err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) == 1 {
			if old, err := api.DecodeJobStatus(resp.Kvs[0].Value); err == nil && old.Version >= st.Version {
				cancel()
				return nil // a newer (or the same) decision is already there
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		tr, err := n.opts.Etcd.Txn(wctx).If(cmp).Then(clientv3.OpPut(key, string(data))).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("coordinator: writing status of %s: %w", st.JobID, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("coordinator: status of %s kept changing under us", st.JobID)
}

// checkLiveness turns time into events: missed heartbeats become
// WorkerLost, a re-forming job that waited a heartbeat timeout becomes
// ReformDue, and heartbeat progress becomes a progress report at most every
// ProgressInterval per job.
func (n *Node) checkLiveness(ctx context.Context) {
	period := max(n.opts.HeartbeatInterval/2, 20*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, ev := range n.dueEvents(time.Now()) {
			if ctx.Err() != nil {
				return
			}
			if _, err := n.propose(ev); err != nil {
				n.log.Warn("proposing", "event", fmt.Sprintf("%T", ev), "err", err)
			}
		}
	}
}

// dueEvents is the leader's time-based decisions at now.
func (n *Node) dueEvents(now time.Time) []core.Event {
	l := n.live.Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	var evs []core.Event
	known := map[string]bool{}
	for _, w := range n.fsm.workers() {
		known[w.id] = true
		seen, ok := l.lastSeen[w.id]
		if !ok {
			l.lastSeen[w.id] = now
			continue
		}
		if sus, ok := l.suspects[w.id]; ok {
			switch {
			case seen.After(sus.at):
				delete(l.suspects, w.id) // it heartbeated since: alive
			case now.Sub(sus.at) > api.SuspectHeartbeats*n.opts.HeartbeatInterval:
				evs = append(evs, core.WorkerLost{WorkerID: w.id, At: now,
					Reason: fmt.Sprintf("worker %s lost it as a peer and it sent no heartbeat in the %v since", sus.reporter, now.Sub(sus.at).Round(time.Millisecond))})
				delete(l.lastSeen, w.id)
				delete(l.suspects, w.id)
				n.metrics.workersLost.Inc()
				continue
			}
		}
		if since := now.Sub(seen); since > n.opts.HeartbeatTimeout {
			evs = append(evs, core.WorkerLost{WorkerID: w.id, At: now,
				Reason: fmt.Sprintf("no heartbeat for %v (timeout %v)", since.Round(time.Millisecond), n.opts.HeartbeatTimeout)})
			delete(l.lastSeen, w.id)
			n.metrics.workersLost.Inc()
		}
	}
	for id := range l.lastSeen {
		if !known[id] {
			delete(l.lastSeen, id)
			delete(l.running, id)
		}
	}
	for id := range l.suspects {
		if !known[id] {
			delete(l.suspects, id)
		}
	}
	for _, j := range n.fsm.jobs() {
		switch j.state {
		case api.JobReforming:
			key := fmt.Sprintf("%s/%d", j.id, j.generation)
			since, ok := l.reformSince[key]
			if !ok {
				l.reformSince[key] = now
				break
			}
			if now.Sub(since) > n.opts.HeartbeatTimeout {
				evs = append(evs, core.ReformDue{JobID: j.id, Generation: j.generation, At: now})
				delete(l.reformSince, key)
				break
			}
			// Members that said, since, that they run something else have
			// stopped: the next generation need not wait for them.
			for _, m := range j.members {
				r, ok := l.running[m]
				stopKey := key + "/" + m
				if ok && r.at.After(since) && (r.job != j.id || r.generation != j.generation) && !l.stopSent[stopKey] {
					evs = append(evs, core.MemberStopped{JobID: j.id, Generation: j.generation, WorkerID: m, At: now})
					l.stopSent[stopKey] = true
				}
			}
		case api.JobRunning:
			p := l.progress[j.id]
			if p.generation == j.generation && p.step > j.step && now.Sub(l.lastProposed[j.id]) >= n.opts.ProgressInterval {
				evs = append(evs, core.Reported{At: now, Report: api.Report{WorkerID: p.worker, JobID: j.id,
					Generation: p.generation, Kind: api.ReportProgress, Step: p.step}})
				l.lastProposed[j.id] = now
			}
		}
	}
	return evs
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// logEvent writes a job event to the coordinator's own log, once, when the
// leader first executes it: operators read what the coordinator decided
// there even without NATS.
func logEvent(log *slog.Logger, e *telemetry.Event) {
	attrs := []any{"job", e.Job, "event", e.Kind, "generation", e.Generation, "step", e.Step}
	if len(e.Workers) > 0 {
		attrs = append(attrs, "workers", e.Workers)
	}
	if e.Worker != "" {
		attrs = append(attrs, "worker", e.Worker)
	}
	if e.Checkpoint != "" {
		attrs = append(attrs, "checkpoint", e.Checkpoint)
	}
	if e.Detail != "" {
		attrs = append(attrs, "detail", e.Detail)
	}
	if e.Error != "" {
		attrs = append(attrs, "error", e.Error)
	}
	level := slog.LevelInfo
	if e.Kind == telemetry.EventFailed || e.Kind == telemetry.EventWorkerLost {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "job event", attrs...)
}
