package coordinator

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/services"
	"github.com/fmtrain/fmtrain/services/servicestest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// single runs one replica on dir until the returned stop is called.
func single(t *testing.T, dir string, cli *clientv3.Client) (*Node, func()) {
	t.Helper()
	return singleAt(t, dir, "", cli)
}

// singleAt is single serving HTTP on httpAddr ("" for any port).
func singleAt(t *testing.T, dir, httpAddr string, cli *clientv3.Client) (*Node, func()) {
	t.Helper()
	n, err := New(Options{ID: "solo", DataDir: dir, HTTPAddr: httpAddr, Etcd: cli, HeartbeatInterval: testHeartbeatInterval,
		HeartbeatTimeout: testHeartbeatTimeout, TuneRaft: fastRaft})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-n.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("single replica not ready")
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return n, stop
}

// TestJobsFromEtcd: specs written to etcd become jobs; a malformed spec fails
// its own job with a status naming the field and disturbs no other job;
// cancel works; after a restart (raft log and snapshot on disk) the
// coordinator resumes its watch and neither loses nor duplicates jobs, also
// when etcd compacted the revision it stopped at.
func TestJobsFromEtcd(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	ctx := context.Background()
	dir := t.TempDir()
	n, stop := single(t, dir, cli)

	if _, err := jobstore.Submit(ctx, cli, "good", testSpec("good", 1, 2, 8, 4, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := jobstore.Submit(ctx, cli, "good", testSpec("good", 1, 2, 8, 4, 10)); err == nil {
		t.Fatal("second submit under the same id succeeded")
	}
	// Written around jobstore's validation, as a hand-edited key would be.
	bad := strings.Replace(string(testSpec("bad", 1, 2, 8, 4, 10)), "local_batch_size: 4", "local_batch_size: -4", 1)
	if _, err := cli.Put(ctx, api.JobSpecKey("bad"), bad); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "bad", 10*time.Second, "malformed job failed", func(s *api.JobStatus) bool { return s.State == api.JobFailed })
	if !strings.Contains(st.Error, "local_batch_size") {
		t.Fatalf("failure does not name the field: %q", st.Error)
	}
	waitStatus(t, cli, "good", 10*time.Second, "good job pending", func(s *api.JobStatus) bool { return s.State == api.JobPending })

	// Cancel the good job.
	if err := jobstore.Cancel(ctx, cli, "good", ""); err != nil {
		t.Fatal(err)
	}
	if err := jobstore.Cancel(ctx, cli, "nope", ""); err == nil {
		t.Fatal("cancelling an unknown job succeeded")
	}
	waitStatus(t, cli, "good", 10*time.Second, "cancelled", func(s *api.JobStatus) bool { return s.State == api.JobCancelled })

	// Restart with a snapshot on disk; a job submitted while down is found.
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	revBefore := n.fsm.revision()
	stop()
	if _, err := jobstore.Submit(ctx, cli, "while-down", testSpec("wd", 1, 1, 4, 4, 10)); err != nil {
		t.Fatal(err)
	}
	n, stop = single(t, dir, cli)
	if got := n.fsm.revision(); got < revBefore {
		t.Fatalf("restored revision %d < %d before the restart", got, revBefore)
	}
	waitStatus(t, cli, "while-down", 10*time.Second, "job submitted while down", func(s *api.JobStatus) bool { return s.State == api.JobPending })
	if st := n.fsm.jobStatus("good"); st.State != api.JobCancelled {
		t.Fatalf("after restart, good is %s", st.State)
	}

	// Restart after etcd compacted past the revision the state holds.
	stop()
	put, err := cli.Put(ctx, "/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := jobstore.Submit(ctx, cli, "after-compaction", testSpec("ac", 1, 1, 4, 4, 10)); err != nil {
		t.Fatal(err)
	}
	n, _ = single(t, dir, cli)
	waitStatus(t, cli, "after-compaction", 10*time.Second, "job found by relisting", func(s *api.JobStatus) bool { return s.State == api.JobPending })
	jobs := n.fsm.jobs()
	if len(jobs) != 4 {
		t.Fatalf("state holds %d jobs, want 4 (no loss, no duplicates): %+v", len(jobs), jobs)
	}
	all, err := jobstore.List(ctx, cli)
	if err != nil || len(all) != 4 || all[0].JobID != "good" {
		t.Fatalf("List: %v %+v", err, all)
	}

	// Health, readiness, status and metrics.
	for path, want := range map[string]string{
		api.PathHealthz: `"ok"`,
		api.PathReadyz:  `"ready":true`,
		api.PathStatus:  `"raft_state":"Leader"`,
		api.PathMetrics: `fmtrain_coordinator_jobs{state="failed"} 1`,
	} {
		body := get(t, n.Addr()+path)
		if !strings.Contains(body, want) {
			t.Errorf("GET %s: no %q in\n%s", path, want, body)
		}
	}
	if body := get(t, n.Addr()+api.PathMetrics); !strings.Contains(body, "fmtrain_coordinator_raft_applied_index") ||
		!strings.Contains(body, `fmtrain_coordinator_raft_state{state="Leader"} 1`) {
		t.Errorf("raft metrics missing:\n%s", body)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestWorkerProtocolErrors: bad requests name the field; an unknown worker
// is told to register again; a stale report is acknowledged, not accepted.
func TestWorkerProtocolErrors(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	n, _ := single(t, t.TempDir(), cli)
	c, err := api.NewClient(api.ClientOptions{Endpoints: []string{n.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "ghost"}); err != api.ErrUnknownWorker {
		t.Fatalf("heartbeat of an unregistered worker: %v, want ErrUnknownWorker", err)
	}
	if _, err := c.Register(ctx, api.RegisterRequest{WorkerID: "w", Device: "cpu"}); err == nil || !strings.Contains(err.Error(), "collective_addr") {
		t.Fatalf("register without collective_addr: %v", err)
	}
	resp, err := http.Post(n.Addr()+api.PathRegister, "application/json", strings.NewReader(`{"worker_id":"w","device":"cpu"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "collective_addr") {
		t.Fatalf("server-side validation: %s %s", resp.Status, b)
	}
	reg, err := c.Register(ctx, api.RegisterRequest{WorkerID: "w", Host: "h", Device: "cpu", CollectiveAddr: "h:1"})
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(reg.HeartbeatTimeout) != testHeartbeatTimeout {
		t.Fatalf("register response %+v", reg)
	}
	rr, err := c.Report(ctx, api.Report{WorkerID: "w", JobID: "none", Generation: 1, Kind: api.ReportProgress, Step: 3})
	if err != nil || rr.Accepted {
		t.Fatalf("stale report: %+v %v", rr, err)
	}
	if err := c.Leave(ctx, api.LeaveRequest{WorkerID: "w", Reason: "SIGTERM"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "w"}); err != api.ErrUnknownWorker {
		t.Fatalf("heartbeat after leaving: %v", err)
	}
}

// TestRebuildFromEtcd: when every replica lost its raft data, a new group
// rebuilds the jobs from etcd: ended jobs stay ended (not run again), a
// running job continues after its last generation from its last
// checkpoint, and workers register again.
func TestRebuildFromEtcd(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	_, stop := singleAt(t, t.TempDir(), addr, cli)

	w0, w1 := newSimWorker(t, "w0", "http://"+addr), newSimWorker(t, "w1", "http://"+addr)
	go w0.run(ctx, t)
	if _, err := jobstore.Submit(ctx, cli, "done", testSpec("done", 1, 1, 4, 4, 10)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "w0 runs done", func() error { return sameGeneration([]*simWorker{w0}, "done", 1) })
	w0.report(t, api.ReportFinished, 10, nil)
	doneBefore := waitStatus(t, cli, "done", 10*time.Second, "done finished", func(s *api.JobStatus) bool { return s.State == api.JobFinished })

	go w1.run(ctx, t)
	if _, err := jobstore.Submit(ctx, cli, "live", testSpec("live", 1, 2, 4, 2, 100)); err != nil {
		t.Fatal(err)
	}
	live := waitStatus(t, cli, "live", 10*time.Second, "live on two workers", func(s *api.JobStatus) bool { return s.State == api.JobRunning && len(s.Workers) == 2 })
	checkFor(t, 10*time.Second, "workers hold live", func() error { return sameGeneration([]*simWorker{w0, w1}, "live", live.Generation) })
	workerWithRank([]*simWorker{w0, w1}, 0).report(t, api.ReportCheckpoint, 10, nil)
	live = waitStatus(t, cli, "live", 10*time.Second, "checkpoint recorded", func(s *api.JobStatus) bool { return s.LastCheckpoint != nil })

	// Every raft replica's data is gone: a new group on a fresh directory.
	stop()
	n, _ := singleAt(t, t.TempDir(), addr, cli)
	rebuilt := waitStatus(t, cli, "live", 15*time.Second, "live continues", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && s.Generation > live.Generation && len(s.Workers) == 2
	})
	if rebuilt.Version <= live.Version || rebuilt.LastCheckpoint == nil || rebuilt.LastCheckpoint.Step != 10 {
		t.Fatalf("rebuilt status %+v after %+v", rebuilt, live)
	}
	checkFor(t, 10*time.Second, "workers resume from the checkpoint", func() error {
		for _, w := range []*simWorker{w0, w1} {
			a := w.assignment()
			if a == nil || a.Generation != rebuilt.Generation || a.StartStep != 10 || a.ResumeFrom == nil {
				return fmt.Errorf("%s holds %+v", w.id, a)
			}
		}
		return nil
	})
	if st, err := jobstore.Status(ctx, cli, "done"); err != nil || st.Version != doneBefore.Version || st.State != api.JobFinished {
		t.Fatalf("the finished job changed: %+v %v (was %+v)", st, err, doneBefore)
	}
	if st := n.fsm.jobStatus("done"); st.State != api.JobFinished {
		t.Fatalf("rebuilt state has done as %s", st.State)
	}
}

// soloWithWorkers runs one in-memory replica on cli and a simulated worker
// for each id until the test ends. Its heartbeat timeout is a minute, far
// longer than the tests, so only failure reports (and the lost-peer fast
// path they start) re-form a job.
func soloWithWorkers(t *testing.T, cli *clientv3.Client, ids ...string) (context.Context, []*simWorker) {
	t.Helper()
	n, err := New(Options{ID: "solo", InMemory: true, Etcd: cli, HeartbeatInterval: testHeartbeatInterval,
		HeartbeatTimeout: time.Minute, TuneRaft: fastRaft, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-n.Ready()

	var ws []*simWorker
	for _, id := range ids {
		w := newSimWorker(t, id, n.Addr())
		ws = append(ws, w)
		go w.run(ctx, t)
	}
	return ctx, ws
}

// TestFailureReportReforms: after one member reports a lost peer, the
// others are told to run nothing; their next heartbeats say so and the job
// re-forms without waiting for any timeout (the heartbeat timeout here is
// far longer than the test).
func TestFailureReportReforms(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	ctx, ws := soloWithWorkers(t, cli, "a", "b", "c")
	if _, err := jobstore.Submit(ctx, cli, "f", testSpec("f", 3, 3, 12, 2, 100)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "f", 10*time.Second, "running", func(s *api.JobStatus) bool { return s.State == api.JobRunning })
	checkFor(t, 10*time.Second, "workers hold the generation", func() error { return sameGeneration(ws, "f", st.Generation) })
	ws[0].report(t, api.ReportFailed, 0, func(r *api.Report) { r.Error = "collective: peer lost (rank 2)" })
	next := waitStatus(t, cli, "f", 10*time.Second, "re-formed", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && s.Generation > st.Generation
	})
	if next.Restarts != 1 || len(next.Workers) != 3 {
		t.Fatalf("re-formed status %+v", next)
	}
}

// TestLostPeerFastPath: a survivor names the peer its collective lost; the
// coordinator declares that worker lost after a few missed heartbeats, far
// sooner than the heartbeat timeout (a minute here). A worker wrongly named
// keeps heartbeating and is not lost.
func TestLostPeerFastPath(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	ctx, ws := soloWithWorkers(t, cli, "a", "b", "c")
	if _, err := jobstore.Submit(ctx, cli, "lp", testSpec("lp", 1, 3, 12, 2, 100)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "lp", 10*time.Second, "running on three", func(s *api.JobStatus) bool { return s.State == api.JobRunning && len(s.Workers) == 3 })
	checkFor(t, 10*time.Second, "workers hold the generation", func() error { return sameGeneration(ws, "lp", st.Generation) })

	// Wrongly named: b is alive; the job re-forms with all three.
	ws[0].report(t, api.ReportFailed, 0, func(r *api.Report) { r.Error = "collective: timeout"; r.LostPeer = "b" })
	st = waitStatus(t, cli, "lp", 10*time.Second, "re-formed with all three", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && s.Generation > st.Generation
	})
	if len(st.Workers) != 3 {
		t.Fatalf("a falsely suspected worker was dropped: %+v", st)
	}
	checkFor(t, 10*time.Second, "workers hold the new generation", func() error { return sameGeneration(ws, "lp", st.Generation) })

	// c dies; a names it.
	ws[2].silence()
	ws[0].report(t, api.ReportFailed, 0, func(r *api.Report) { r.Error = "collective: peer lost: rank 2"; r.LostPeer = "c" })
	st = waitStatus(t, cli, "lp", 10*time.Second, "re-formed without c", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && len(s.Workers) == 2
	})
	if slices.Contains(st.Workers, "c") {
		t.Fatalf("status %+v", st)
	}
}

// TestEtcdRestart: while etcd is down the coordinator keeps deciding; when
// etcd is back (same data, same port) the statuses it decided meanwhile
// reach etcd promptly.
func TestEtcdRestart(t *testing.T) {
	dir, port := t.TempDir(), freePorts(t, 1)[0]
	startAt := func() *services.Etcd {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e, err := services.StartEtcd(ctx, services.Options{Dir: dir, Port: port, Fast: true})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := startAt()
	cli, err := NewEtcdClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	n, err := New(Options{ID: "solo", InMemory: true, Etcd: cli, HeartbeatInterval: testHeartbeatInterval,
		HeartbeatTimeout: testHeartbeatTimeout, TuneRaft: fastRaft, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	defer cancel()
	<-n.Ready()
	w := newSimWorker(t, "w", n.Addr())
	go w.run(ctx, t)
	if _, err := jobstore.Submit(ctx, cli, "er", testSpec("er", 1, 1, 4, 4, 100)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cli, "er", 10*time.Second, "running", func(s *api.JobStatus) bool { return s.State == api.JobRunning })
	checkFor(t, 10*time.Second, "worker holds the job", func() error { return sameGeneration([]*simWorker{w}, "er", 1) })

	t0 := time.Now()
	e.Close() // with the coordinator's watch open this waits etcd's request timeout (5 s)
	t.Logf("etcd stopped in %v", time.Since(t0).Round(time.Millisecond))
	if r := w.report(t, api.ReportCheckpoint, 10, nil); !r.Accepted {
		t.Fatal("checkpoint not accepted while etcd is down")
	}
	time.Sleep(2 * time.Second) // the executor fails against the stopped etcd meanwhile
	t0 = time.Now()
	e = startAt()
	t.Logf("etcd restarted in %v", time.Since(t0))
	back := time.Now()
	waitStatus(t, cli, "er", 15*time.Second, "checkpoint in etcd after the restart", func(s *api.JobStatus) bool {
		return s.LastCheckpoint != nil && s.LastCheckpoint.Step == 10
	})
	t.Logf("status reached etcd %v after it restarted", time.Since(back).Round(time.Millisecond))
	// Stop the clients first: etcd waits for open watches when it closes.
	cancel()
	<-done
	cli.Close()
	e.Close()
}
