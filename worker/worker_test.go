package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/fmtrain/fmtrain/telemetry/telemetrytest"
)

// memCoordinator is an in-memory coordinator for one job: it forms a single
// generation once `world` workers have registered, hands it out in
// heartbeats, records every report and leave, and withdraws the assignment
// once the job finished or failed. The real coordinator (raft, etcd) is
// tested end to end in e2e/.
type memCoordinator struct {
	job, spec string
	world     int

	mu       sync.Mutex
	order    []string
	addrs    map[string]string
	assigned map[string]*api.Assignment
	reports  []api.Report
	left     []string
	ended    bool
	// withdrawn workers get no assignment (as while a job re-forms).
	withdrawn map[string]bool
}

var _ Coordinator = (*memCoordinator)(nil)

func newMemCoordinator(job, spec string, world int) *memCoordinator {
	return &memCoordinator{job: job, spec: spec, world: world, addrs: map[string]string{}, assigned: map[string]*api.Assignment{},
		withdrawn: map[string]bool{}}
}

// withdraw stops assigning the generation to worker id.
func (c *memCoordinator) withdraw(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.withdrawn[id] = true
}

func (c *memCoordinator) Register(_ context.Context, req api.RegisterRequest) (*api.RegisterResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Incarnation == "" {
		return nil, fmt.Errorf("worker %s registered without an incarnation", req.WorkerID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.addrs[req.WorkerID]; !ok {
		c.order = append(c.order, req.WorkerID)
	}
	c.addrs[req.WorkerID] = req.CollectiveAddr
	if len(c.order) == c.world && len(c.assigned) == 0 {
		peers := make([]string, c.world)
		for r, id := range c.order {
			peers[r] = c.addrs[id]
		}
		for r, id := range c.order {
			c.assigned[id] = &api.Assignment{JobID: c.job, Spec: c.spec, Generation: 1, Rank: r, WorldSize: c.world,
				Peers: peers, Workers: c.order, GradAccum: 1}
		}
	}
	return &api.RegisterResponse{WorkerID: req.WorkerID, HeartbeatInterval: api.Duration(50 * time.Millisecond)}, nil
}

func (c *memCoordinator) Heartbeat(_ context.Context, req api.HeartbeatRequest) (*api.HeartbeatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.addrs[req.WorkerID]; !ok {
		return nil, api.ErrUnknownWorker
	}
	if c.ended || c.withdrawn[req.WorkerID] {
		return &api.HeartbeatResponse{}, nil
	}
	return &api.HeartbeatResponse{Assignment: c.assigned[req.WorkerID]}, nil
}

func (c *memCoordinator) Report(_ context.Context, r api.Report) (*api.ReportResponse, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reports = append(c.reports, r)
	if r.Kind == api.ReportFinished || r.Kind == api.ReportFailed {
		c.ended = true
	}
	return &api.ReportResponse{Accepted: true}, nil
}

func (c *memCoordinator) Leave(_ context.Context, req api.LeaveRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = append(c.left, req.WorkerID)
	return nil
}

// rankOf is the rank of worker id in the generation (-1 before it formed).
func (c *memCoordinator) rankOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.assigned[id]; a != nil {
		return a.Rank
	}
	return -1
}

func (c *memCoordinator) snapshot() ([]api.Report, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]api.Report(nil), c.reports...), append([]string(nil), c.left...)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tinySpec is a job small enough to train under the race detector.
func tinySpec(t *testing.T, manifest string, maxSteps, ckptEvery int) string {
	t.Helper()
	return fmt.Sprintf(`name: tiny
seed: 3
device: cpu
min_workers: 2
max_workers: 2
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 2, mlp_ratio: 2, text_dim: 8}
flow_matching: {adapter_type: simple}
data: {manifest: %s}
step_scheduler: {global_batch_size: 4, local_batch_size: 2, max_steps: %d, ckpt_every_steps: %d, log_every_steps: 1}
checkpoint: {checkpoint_dir: %s, keep_last: 0}
`, manifest, maxSteps, ckptEvery, filepath.Join(filepath.Dir(manifest), "ckpt"))
}

func synthData(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := data.Synth(dir, data.SynthOptions{NumSamples: 32, NumShards: 2, Size: 8, TextDim: 8}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, data.SynthManifestName)
}

type runningWorker struct {
	w    *Worker
	done chan error
}

func startWorkers(t *testing.T, ctx context.Context, coord Coordinator, natsSrv *telemetrytest.Server, n int) []runningWorker {
	t.Helper()
	var ws []runningWorker
	for i := range n {
		w, err := New(Options{ID: fmt.Sprintf("w%d", i), Coordinator: coord, NATS: natsSrv.Conn, Device: "cpu",
			CollectiveTimeout: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		rw := runningWorker{w: w, done: make(chan error, 1)}
		go func() { rw.done <- w.Run(ctx) }()
		ws = append(ws, rw)
	}
	for _, rw := range ws {
		select {
		case <-rw.w.Ready():
		case <-time.After(20 * time.Second):
			t.Fatal("worker did not register")
		}
	}
	return ws
}

func shutdown(t *testing.T, ws []runningWorker) {
	t.Helper()
	for _, rw := range ws {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := rw.w.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		cancel()
		if err := <-rw.done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
}

func TestWorkersTrainAJobToTheEnd(t *testing.T) {
	s := telemetrytest.Start(t)
	manifest := synthData(t)
	coord := newMemCoordinator("tiny", tinySpec(t, manifest, 4, 2), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ws := startWorkers(t, ctx, coord, s, 2)

	// Every rank reports finished, unless the coordinator withdrew the job
	// (after the first report) before the rank's training returned.
	waitFor(t, 60*time.Second, "a finished report and both workers idle", func() bool {
		reports, _ := coord.snapshot()
		finished := slices.ContainsFunc(reports, func(r api.Report) bool { return r.Kind == api.ReportFinished })
		return finished && ws[0].w.Phase() == PhaseIdle && ws[1].w.Phase() == PhaseIdle
	})
	shutdown(t, ws)

	reports, left := coord.snapshot()
	var ckptSteps []int64
	for _, r := range reports {
		switch r.Kind {
		case api.ReportCheckpoint:
			if coord.rankOf(r.WorkerID) != 0 || r.Checkpoint.SamplesSeen != r.Step*4 || r.Checkpoint.Checksum == "" {
				t.Errorf("checkpoint report %+v %+v: want one from rank 0 with samples_seen = step × 4 and a checksum", r, *r.Checkpoint)
			}
			if _, err := os.Stat(r.Checkpoint.Path); err != nil {
				t.Errorf("reported checkpoint does not exist: %v", err)
			}
			ckptSteps = append(ckptSteps, r.Step)
		case api.ReportFinished:
			if r.Step != 4 {
				t.Errorf("finished at step %d, want 4", r.Step)
			}
		default:
			t.Errorf("unexpected report %+v", r)
		}
	}
	if fmt.Sprint(ckptSteps) != "[2 4]" {
		t.Errorf("checkpoints at steps %v, want [2 4]", ckptSteps)
	}
	if len(left) != 2 {
		t.Errorf("workers that left: %v, want both", left)
	}

	msgs, err := telemetry.ReadAll(ctx, s.JS, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	steps := map[int][]int64{}
	var firstStep, logs int
	for _, m := range msgs {
		switch {
		case m.Metrics != nil:
			steps[m.Rank] = append(steps[m.Rank], m.Metrics.Step)
			if m.Metrics.SamplesSeen != m.Metrics.Step*4 || m.Metrics.Device == nil || m.Metrics.Device.Kind != "cpu" ||
				m.Metrics.WorldSize != 2 || m.Metrics.Generation != 1 || !(m.Metrics.Loss > 0) {
				t.Errorf("metrics %+v", *m.Metrics)
			}
		case m.Event != nil && m.Event.Kind == telemetry.EventFirstStep:
			firstStep++
		case m.Log != nil:
			logs++
		}
	}
	for rank := range 2 {
		if fmt.Sprint(steps[rank]) != "[1 2 3 4]" {
			t.Errorf("rank %d published steps %v, want [1 2 3 4]", rank, steps[rank])
		}
	}
	if firstStep != 1 || logs == 0 {
		t.Errorf("first_step events %d (want 1 from rank 0), log records %d (want some)", firstStep, logs)
	}
}

// trainingPair starts two workers on a long job and returns them in rank
// order once training runs, with a context that bounds the test.
func trainingPair(t *testing.T) (context.Context, *memCoordinator, runningWorker, runningWorker) {
	t.Helper()
	s := telemetrytest.Start(t)
	manifest := synthData(t)
	coord := newMemCoordinator("tiny", tinySpec(t, manifest, 100000, 0), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	ws := startWorkers(t, ctx, coord, s, 2)
	waitFor(t, 60*time.Second, "step 2", func() bool { return ws[0].w.step.Load() >= 2 })
	if coord.rankOf(ws[0].w.ID()) != 0 {
		return ctx, coord, ws[1], ws[0]
	}
	return ctx, coord, ws[0], ws[1]
}

func TestDrainEndsTheGenerationAndThePeerReportsIt(t *testing.T) {
	ctx, coord, r0, r1 := trainingPair(t)

	// Drain rank 0: it finishes its step, checkpoints it (no step is lost),
	// and leaves; rank 1 loses its peer and reports a non-fatal failure.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := r0.w.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-r0.done; err != nil {
		t.Fatal(err)
	}
	stopped := r0.w.step.Load()
	waitFor(t, 30*time.Second, "rank 1's failure report", func() bool {
		reports, _ := coord.snapshot()
		return len(reports) == 2
	})
	reports, left := coord.snapshot()
	ck, fail := reports[0], reports[1]
	if ck.Kind != api.ReportCheckpoint || ck.WorkerID != r0.w.ID() || ck.Step != stopped || ck.Checkpoint.SamplesSeen != stopped*4 {
		t.Errorf("first report %+v: want rank 0's checkpoint of step %d, where it stopped", ck, stopped)
	}
	if fail.Kind != api.ReportFailed || fail.WorkerID != r1.w.ID() || fail.Fatal || !strings.Contains(fail.Error, "peer lost") || fail.LostPeer != r0.w.ID() {
		t.Errorf("second report %+v: want a non-fatal peer-lost failure from rank 1 naming %s as the lost peer", fail, r0.w.ID())
	}
	if len(left) != 1 || left[0] != r0.w.ID() {
		t.Errorf("left = %v, want [%s]", left, r0.w.ID())
	}
	waitFor(t, 10*time.Second, "rank 1 to be idle", func() bool { return r1.w.Phase() == PhaseIdle })
	shutdown(t, []runningWorker{r1})
}

// TestWithdrawnRank0CheckpointsItsLastStep: when the coordinator withdraws
// the generation from rank 0 (the job re-forms because another rank failed
// or was lost), rank 0 is cancelled mid-step, yet it still checkpoints and
// reports the last step it completed before its heartbeats say it stopped,
// because the coordinator forms the next generation from that report.
func TestWithdrawnRank0CheckpointsItsLastStep(t *testing.T) {
	_, coord, r0, r1 := trainingPair(t)

	coord.withdraw(r0.w.ID())
	waitFor(t, 30*time.Second, "rank 0 to be idle", func() bool { return r0.w.Phase() == PhaseIdle })
	last := r0.w.step.Load()
	reports, _ := coord.snapshot()
	var ck *api.Report
	for i, r := range reports {
		if r.WorkerID == r0.w.ID() && r.Kind == api.ReportCheckpoint {
			ck = &reports[i]
		}
	}
	if ck == nil {
		t.Fatalf("reports %+v: rank 0 reported no checkpoint of its last step %d after the withdrawal", reports, last)
	}
	for _, r := range reports {
		if r.WorkerID == r0.w.ID() && r.Kind == api.ReportFailed {
			t.Errorf("rank 0 reported %+v: a withdrawn generation is stopped, not failed", r)
		}
	}
	if ck.Step != last || ck.Checkpoint.Step != last || ck.Checkpoint.SamplesSeen != last*4 {
		t.Errorf("checkpoint report %+v: want step %d (rank 0's last), samples %d", ck, last, last*4)
	}
	if h, err := checkpoint.ReadHeader(ck.Checkpoint.Path); err != nil || h.Checksum != ck.Checkpoint.Checksum {
		t.Errorf("reported checkpoint %s: header %+v, %v; want checksum %s", ck.Checkpoint.Path, h, err, ck.Checkpoint.Checksum)
	}
	shutdown(t, []runningWorker{r0, r1})
}

func TestMissingDatasetIsFatal(t *testing.T) {
	s := telemetrytest.Start(t)
	missing := filepath.Join(t.TempDir(), "nope", "manifest.json")
	coord := newMemCoordinator("tiny", tinySpec(t, missing, 4, 0), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws := startWorkers(t, ctx, coord, s, 2)
	waitFor(t, 30*time.Second, "a failure report", func() bool {
		reports, _ := coord.snapshot()
		return len(reports) > 0
	})
	shutdown(t, ws)
	reports, _ := coord.snapshot()
	for _, r := range reports {
		if r.Kind != api.ReportFailed || !r.Fatal || !strings.Contains(r.Error, missing) {
			t.Errorf("report %+v: want a fatal failure naming %s", r, missing)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("no coordinator accepted")
	}
	_, err := New(Options{Coordinator: newMemCoordinator("j", "", 1), Device: "tpu:0"})
	if err == nil || !strings.Contains(err.Error(), "tpu:0") {
		t.Errorf("bad device: %v", err)
	}
}
