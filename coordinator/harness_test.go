package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/internal/coordtest"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/hashicorp/raft"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Test timings: short enough for fast failover, long enough for -race on a
// busy 2-core machine.
const (
	testHeartbeatInterval = 100 * time.Millisecond
	testHeartbeatTimeout  = 2 * time.Second
)

// fastRaft shortens raft's timeouts for tests, but not so far that a
// leader on a loaded 2-core machine under -race loses its lease again and
// again (each new leadership restarts the heartbeat grace, so a flapping
// leader would never declare a dead worker lost).
func fastRaft(c *raft.Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 300 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

// testLogger collects a test's coordinator logs and prints them if the
// test fails.
func testLogger(t testing.TB) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("coordinator logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// checkFor polls cond until it holds or d passes.
func checkFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("after %v: %s: %v", d, what, err)
}

// waitStatus waits until job's status in etcd satisfies ok.
func waitStatus(t *testing.T, cli *clientv3.Client, job string, d time.Duration, what string, ok func(*api.JobStatus) bool) *api.JobStatus {
	t.Helper()
	var last *api.JobStatus
	checkFor(t, d, what, func() error {
		st, err := jobstore.Status(context.Background(), cli, job)
		if err != nil {
			return err
		}
		last = st
		if !ok(st) {
			return fmt.Errorf("status %+v", *st)
		}
		return nil
	})
	return last
}

// simWorker is a worker that trains nothing: it registers, heartbeats and
// remembers its assignment; the test reports on its behalf.
type simWorker struct {
	id     string
	client *api.Client

	mu       sync.Mutex
	current  *api.Assignment
	step     int64
	silenced bool // stop heartbeating (a crashed worker)
	regs     int
}

func newSimWorker(t *testing.T, id string, endpoints ...string) *simWorker {
	c, err := api.NewClient(api.ClientOptions{Endpoints: endpoints, RequestTimeout: 2 * time.Second, RetryFor: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &simWorker{id: id, client: c}
}

func (w *simWorker) run(ctx context.Context, t *testing.T) {
	reg := api.RegisterRequest{WorkerID: w.id, Host: "test", Device: "cpu", CollectiveAddr: w.id + ":7100"}
	registered := false
	for ctx.Err() == nil {
		w.mu.Lock()
		silenced := w.silenced
		req := api.HeartbeatRequest{WorkerID: w.id, Step: w.step}
		if w.current != nil {
			req.JobID, req.Generation = w.current.JobID, w.current.Generation
		}
		w.mu.Unlock()
		if silenced {
			sleep(ctx, testHeartbeatInterval)
			continue
		}
		if !registered {
			if _, err := w.client.Register(ctx, reg); err != nil {
				if ctx.Err() == nil {
					t.Logf("%s: register: %v", w.id, err)
				}
				sleep(ctx, testHeartbeatInterval)
				continue
			}
			registered = true
			w.mu.Lock()
			w.regs++
			w.current, w.step = nil, 0
			w.mu.Unlock()
		}
		resp, err := w.client.Heartbeat(ctx, req)
		switch {
		case errors.Is(err, api.ErrUnknownWorker):
			registered = false
		case err != nil:
			if ctx.Err() == nil {
				t.Logf("%s: heartbeat: %v", w.id, err)
			}
		default:
			w.mu.Lock()
			if a := resp.Assignment; a == nil || w.current == nil || a.Generation != w.current.Generation || a.JobID != w.current.JobID {
				w.current = a
				if a != nil {
					w.step = a.StartStep
				}
			}
			w.mu.Unlock()
		}
		sleep(ctx, testHeartbeatInterval)
	}
}

func (w *simWorker) assignment() *api.Assignment {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// train pretends to complete steps up to step.
func (w *simWorker) train(step int64) {
	w.mu.Lock()
	w.step = step
	w.mu.Unlock()
}

func (w *simWorker) silence() {
	w.mu.Lock()
	w.silenced = true
	w.mu.Unlock()
}

func (w *simWorker) report(t *testing.T, kind api.ReportKind, step int64, mut func(*api.Report)) *api.ReportResponse {
	t.Helper()
	a := w.assignment()
	if a == nil {
		t.Fatalf("%s has no assignment to report on", w.id)
	}
	r := api.Report{WorkerID: w.id, JobID: a.JobID, Generation: a.Generation, Kind: kind, Step: step}
	if kind == api.ReportCheckpoint {
		r.Checkpoint = &api.Checkpoint{Path: fmt.Sprintf("/ckpt/%s/step_%d", a.JobID, step), Checksum: "sha256:x", Step: step, SamplesSeen: step * int64(a.Data.GlobalBatch)}
	}
	if mut != nil {
		mut(&r)
	}
	resp, err := w.client.Report(context.Background(), r)
	if err != nil {
		t.Fatalf("%s: report %s: %v", w.id, kind, err)
	}
	return resp
}

// testSpec is a valid job spec for the coordinator tests.
func testSpec(name string, minW, maxW, global, local, maxSteps int) []byte {
	return []byte(coordtest.JobSpec(name, "cpu", minW, maxW, global, local, maxSteps))
}
