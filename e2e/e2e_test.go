package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/local"
	"github.com/fmtrain/fmtrain/telemetry"
)

// startCluster starts etcd, NATS, a coordinator and n worker processes
// (this test binary, re-executed as fm-worker).
func startCluster(t *testing.T, n int) *local.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := local.StartCluster(ctx, local.ClusterOptions{
		Dir: t.TempDir(), Exe: os.Args[0], WorkerEnv: []string{workerEnv + "=1"}, Fast: true,
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 1500 * time.Millisecond,
		CollectiveTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := range n + 1 {
				b, _ := os.ReadFile(filepath.Join(c.Dir(), "logs", local.WorkerID(i)+".log"))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("--- %s log (end):\n%s", local.WorkerID(i), b)
			}
		}
		c.Close()
	})
	for i := range n {
		if _, err := c.StartWorker(local.WorkerID(i)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// dataset writes a small demo dataset (8×8 images) and returns its manifest.
func dataset(t *testing.T, samples, shards int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := data.Synth(dir, data.SynthOptions{NumSamples: samples, NumShards: shards, Size: 8, TextDim: 8}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, data.SynthManifestName)
}

type jobParams struct {
	manifest            string
	minW, maxW          int
	global, local       int
	maxSteps, ckptEvery int
	ckptDir             string
}

// spec is a tiny job: small enough to train under the race detector.
func spec(p jobParams) []byte {
	return fmt.Appendf(nil, `name: e2e
seed: 5
device: cpu
min_workers: %d
max_workers: %d
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 2, mlp_ratio: 2, text_dim: 8}
flow_matching: {adapter_type: simple}
data: {manifest: %s}
optimizer: {lr: 1.0e-3}
step_scheduler: {global_batch_size: %d, local_batch_size: %d, max_steps: %d, ckpt_every_steps: %d, log_every_steps: 1}
checkpoint: {checkpoint_dir: %s, keep_last: 0}
`, p.minW, p.maxW, p.manifest, p.global, p.local, p.maxSteps, p.ckptEvery, p.ckptDir)
}

// rank0Steps returns, per step, the generation whose rank 0 last logged it.
func rank0Steps(t *testing.T, c *local.Cluster, job string) (steps []int64, gens map[int64]uint64, last *telemetry.Metrics) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := telemetry.ReadAll(ctx, c.JS, job, telemetry.KindMetrics)
	if err != nil {
		t.Fatal(err)
	}
	gens = map[int64]uint64{}
	for _, m := range msgs {
		if m.Rank != 0 {
			continue
		}
		if _, seen := gens[m.Metrics.Step]; !seen {
			steps = append(steps, m.Metrics.Step)
		}
		gens[m.Metrics.Step] = m.Metrics.Generation
		last = m.Metrics
	}
	slices.Sort(steps)
	return steps, gens, last
}

// generationAt follows rank 0's metrics until it logs a step >= step in a
// generation of the given world size, and returns that generation and its
// workers in rank order (from the job status in etcd: the coordinator's
// events may reach the stream after the first metrics of a generation).
func generationAt(t *testing.T, ctx context.Context, c *local.Cluster, job string, world int, step int64) (uint64, []string) {
	t.Helper()
	var gen uint64
	err := telemetry.Follow(ctx, c.JS, telemetry.FollowOptions{Job: job, Kinds: []telemetry.Kind{telemetry.KindMetrics}, FromStart: true},
		func(m telemetry.Message) error {
			if m.Rank == 0 && m.Metrics.WorldSize == world && m.Metrics.Step >= step {
				gen = m.Metrics.Generation
				return telemetry.ErrStop
			}
			return nil
		})
	if err != nil || gen == 0 {
		st, _ := c.Status(context.Background(), job)
		t.Fatalf("waiting for step %d with %d workers: %v (status %+v)", step, world, err, st)
	}
	for {
		st, err := c.Status(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		if st.Generation == gen && len(st.Workers) == world {
			return gen, st.Workers
		}
		if st.Generation > gen {
			t.Fatalf("generation %d ended before the test could act on it (status %+v)", gen, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seq(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestJobTrainsToMaxStepsAndBadJobsFailAlone runs a good job next to three
// bad ones (malformed spec, missing dataset, corrupt shard) on two worker
// processes: the bad ones fail with a status that says why, the good one
// trains to exactly max_steps over exactly max_steps × global batch samples.
func TestJobTrainsToMaxStepsAndBadJobsFailAlone(t *testing.T) {
	c := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	root := t.TempDir()
	manifest := dataset(t, 64, 2)

	// A corrupt copy of the dataset: one shard truncated.
	corruptDir := filepath.Join(root, "corrupt")
	if _, err := data.Synth(corruptDir, data.SynthOptions{NumSamples: 64, NumShards: 2, Size: 8, TextDim: 8}); err != nil {
		t.Fatal(err)
	}
	m, err := data.ReadManifest(filepath.Join(corruptDir, data.SynthManifestName))
	if err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(corruptDir, m.Shards[1].Path)
	if err := os.Truncate(shard, 100); err != nil {
		t.Fatal(err)
	}

	const steps, global = 12, 8
	good := jobParams{manifest: manifest, minW: 2, maxW: 2, global: global, local: 2, maxSteps: steps, ckptEvery: 5, ckptDir: filepath.Join(root, "ckpt-good")}
	nodata := good
	nodata.manifest, nodata.ckptDir = filepath.Join(root, "missing", "manifest.json"), filepath.Join(root, "ckpt-nodata")
	corrupt := good
	corrupt.manifest, corrupt.ckptDir = filepath.Join(corruptDir, data.SynthManifestName), filepath.Join(root, "ckpt-corrupt")

	// The malformed spec bypasses fmctl submit's validation (written
	// straight to etcd), as a hand-written key or an older client would.
	if _, err := c.Etcd.Put(ctx, api.JobSpecKey("malformed"), "name: bad\nmodel: {hidden_size: -3}\nbogus_key: 1\n"); err != nil {
		t.Fatal(err)
	}
	for id, p := range map[string]jobParams{"nodata": nodata, "corrupt": corrupt, "good": good} {
		if err := c.Submit(ctx, id, spec(p)); err != nil {
			t.Fatal(err)
		}
	}

	for id, want := range map[string]string{"malformed": "bogus_key", "nodata": nodata.manifest, "corrupt": filepath.Base(shard)} {
		st, err := c.WaitDone(ctx, id)
		if err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
		if st.State != api.JobFailed || !strings.Contains(st.Error, want) {
			t.Errorf("job %s: state %s, error %q: want failed with an error naming %q", id, st.State, st.Error, want)
		}
	}

	st, err := c.WaitDone(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.JobFinished || st.Step != steps || st.LastCheckpoint == nil || st.LastCheckpoint.Step != steps {
		t.Fatalf("good job status %+v: want finished at step %d with its last checkpoint", st, steps)
	}
	// The data seen is exact: the final checkpoint's data position.
	h, err := checkpoint.ReadHeader(st.LastCheckpoint.Path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Step != steps || h.DataPosition != steps*global || st.LastCheckpoint.SamplesSeen != steps*global {
		t.Errorf("final checkpoint: step %d, data position %d (status says %d): want %d and %d",
			h.Step, h.DataPosition, st.LastCheckpoint.SamplesSeen, steps, steps*global)
	}
	// Metrics arrived on NATS: every step once, from both ranks.
	got, _, last := rank0Steps(t, c, "good")
	if !slices.Equal(got, seq(1, steps)) {
		t.Errorf("rank 0 logged steps %v, want 1..%d", got, steps)
	}
	if last == nil || last.SamplesSeen != steps*global || last.WorldSize != 2 || last.Device == nil {
		t.Errorf("last rank-0 metrics %+v", last)
	}
	msgs, err := telemetry.ReadAll(ctx, c.JS, "good", telemetry.KindMetrics)
	if err != nil {
		t.Fatal(err)
	}
	rank1 := 0
	for _, m := range msgs {
		if m.Rank == 1 {
			rank1++
		}
	}
	if rank1 < steps {
		t.Errorf("rank 1 published %d metrics messages, want at least %d", rank1, steps)
	}
}

// TestKillAndRestartWorker kills one of three worker processes with SIGKILL
// mid-training: the job re-forms with two from its last checkpoint and
// completes; the time from the kill to the first step of the new
// generation is reported. The killed worker, restarted, rejoins at a later
// generation.
func TestKillAndRestartWorker(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second)
	defer cancel()
	root := t.TempDir()
	const steps, global = 300, 12
	p := jobParams{manifest: dataset(t, 96, 3), minW: 2, maxW: 3, global: global, local: 2, maxSteps: steps, ckptEvery: 5, ckptDir: filepath.Join(root, "ckpt")}
	if err := c.Submit(ctx, "elastic", spec(p)); err != nil {
		t.Fatal(err)
	}

	gen3, workers := generationAt(t, ctx, c, "elastic", 3, 17)
	victim := workers[len(workers)-1]
	events := make(chan *telemetry.Event, 1000)
	go func() {
		_ = telemetry.Follow(ctx, c.JS, telemetry.FollowOptions{Job: "elastic", Kinds: []telemetry.Kind{telemetry.KindEvents}, FromStart: true},
			func(m telemetry.Message) error {
				events <- m.Event
				return nil
			})
	}()
	var killed time.Time
	var timeline []*telemetry.Event // events after the kill, for the recovery breakdown
	waitEvent := func(what string, match func(*telemetry.Event) bool) *telemetry.Event {
		t.Helper()
		for {
			select {
			case e := <-events:
				if !killed.IsZero() && e.Time.After(killed) && len(timeline) < 8 {
					timeline = append(timeline, e)
				}
				if match(e) {
					return e
				}
			case <-ctx.Done():
				st, _ := c.Status(context.Background(), "elastic")
				t.Fatalf("waiting for %s: %v (status %+v)", what, ctx.Err(), st)
			}
		}
	}
	killed = time.Now()
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	first := waitEvent("the first step after the kill", func(e *telemetry.Event) bool {
		return e.Kind == telemetry.EventFirstStep && e.Generation > gen3
	})
	recovery := first.Time.Sub(killed)
	t.Logf("kill -9 of %s → first step of generation %d (world %d): %v", victim, first.Generation, first.WorldSize, recovery.Round(time.Millisecond))
	for _, e := range timeline {
		t.Logf("  +%v %s (gen %d)", e.Time.Sub(killed).Round(time.Millisecond), e.Kind, e.Generation)
	}
	if first.WorldSize != 2 {
		t.Errorf("generation after the kill has world size %d, want 2", first.WorldSize)
	}
	// Rank 0 checkpointed the last step it completed before the loss was
	// noticed, so the new generation resumes there: no step is lost.
	_, gensBefore, _ := rank0Steps(t, c, "elastic")
	var lastBefore int64
	for s, g := range gensBefore {
		if g == gen3 && s > lastBefore {
			lastBefore = s
		}
	}
	if resumed := first.Step - 1; resumed < lastBefore || resumed > lastBefore+1 {
		t.Errorf("generation %d resumed from step %d; rank 0 had logged step %d in generation %d: steps were lost", first.Generation, resumed, lastBefore, gen3)
	} else {
		t.Logf("rank 0 logged step %d before the kill was noticed; generation %d resumed from step %d", lastBefore, first.Generation, resumed)
	}

	// Restart the killed worker: it rejoins at the next generation.
	if _, err := c.StartWorker(victim); err != nil {
		t.Fatal(err)
	}
	rejoined := waitEvent("the restarted worker to rejoin", func(e *telemetry.Event) bool {
		return e.Kind == telemetry.EventGenerationFormed && e.Generation > first.Generation && slices.Contains(e.Workers, victim)
	})
	t.Logf("%s rejoined at generation %d (world %d)", victim, rejoined.Generation, rejoined.WorldSize)

	st, err := c.WaitDone(ctx, "elastic")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.JobFinished || st.Step != steps {
		t.Fatalf("status %+v: want finished at step %d", st, steps)
	}
	h, err := checkpoint.ReadHeader(st.LastCheckpoint.Path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Step != steps || h.DataPosition != steps*global {
		t.Errorf("final checkpoint step %d data position %d, want %d and %d", h.Step, h.DataPosition, steps, steps*global)
	}
	got, gens, _ := rank0Steps(t, c, "elastic")
	if !slices.Equal(got, seq(1, steps)) {
		t.Errorf("rank 0 logged steps %v, want every step 1..%d", got, steps)
	}
	if gens[steps] < rejoined.Generation {
		t.Errorf("the last step ran in generation %d, before the rejoin (%d)", gens[steps], rejoined.Generation)
	}
}

// TestDrainLosesNoSteps sends SIGTERM to rank 0 mid-training: it finishes
// its step, checkpoints it and leaves with exit status 0; the job re-forms on
// the other worker from exactly that step (no checkpoint was due: without the
// drain checkpoint it would restart from step 0) and completes.
func TestDrainLosesNoSteps(t *testing.T) {
	c := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const steps, global = 300, 8
	p := jobParams{manifest: dataset(t, 64, 2), minW: 1, maxW: 2, global: global, local: 2, maxSteps: steps, ckptEvery: 1000, ckptDir: filepath.Join(t.TempDir(), "ckpt")}
	if err := c.Submit(ctx, "drain", spec(p)); err != nil {
		t.Fatal(err)
	}
	gen, workers := generationAt(t, ctx, c, "drain", 2, 8)
	rank0 := workers[0]
	if err := c.Drain(ctx, rank0); err != nil {
		t.Fatalf("drained worker exited with %v, want status 0", err)
	}
	st, err := c.WaitDone(ctx, "drain")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.JobFinished || st.Step != steps {
		t.Fatalf("status %+v: want finished at step %d", st, steps)
	}
	msgs, err := telemetry.ReadAll(ctx, c.JS, "drain", telemetry.KindEvents)
	if err != nil {
		t.Fatal(err)
	}
	var drainedAt, resumedAt int64 = -1, -1
	for _, m := range msgs {
		e := m.Event
		switch {
		case e.Kind == telemetry.EventWorkerDraining && e.Worker == rank0:
			drainedAt = e.Step
		case e.Kind == telemetry.EventGenerationFormed && e.Generation > gen && resumedAt < 0:
			resumedAt = e.Step
			if e.WorldSize != 1 || slices.Contains(e.Workers, rank0) {
				t.Errorf("generation after the drain: %+v, want the other worker alone", e)
			}
		}
	}
	// The drain event carries the step done when SIGTERM arrived; the step
	// in progress is finished too, so the resume step is that or the next.
	if drainedAt < 8 || resumedAt < drainedAt || resumedAt > drainedAt+1 {
		t.Errorf("drained at step %d, next generation resumed from step %d: want the drain step (no lost steps)", drainedAt, resumedAt)
	}
	t.Logf("SIGTERM at step %d; the job resumed from step %d on one worker and finished at %d", drainedAt, resumedAt, st.Step)
}
