//go:build multihost

// Package multihost tests fmtrain across real separate hosts: the compose
// cluster of deploy/docker (etcd, NATS, three raft coordinators, three CPU
// workers, each a container with its own address on a private network). A
// tiny job is submitted with fmctl from this host, and while it trains one
// fault is injected: a worker stopped, rank 0 stopped, rank 0 killed, the raft
// leader stopped, a worker cut off the network for longer than the heartbeat
// timeout, etcd restarted.
// After each the job must finish at exactly max_steps, having consumed
// exactly max_steps × global_batch_size samples, with every checkpoint
// intact and the status in etcd right; the recovery time is printed.
//
// Run it with `make test-multihost` (it builds the images first); it is not
// part of `make test`. It needs Docker with compose and about 4 minutes.
package multihost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/jobspec"
)

// The job: small enough for 2 cores, long enough to hit it mid-training.
const (
	maxSteps       = 200 // about 7 steps/s on 3 workers sharing 2 cores
	ckptEvery      = 20
	globalBatch    = 48 // 3 workers × 8 × accumulation 2; 2 workers × 8 × 3; 1 × 8 × 6
	faultAfterStep = 50 // inject once checkpoints exist and training is under way
)

func jobYAML(name string) string {
	return fmt.Sprintf(`name: %s
seed: 11
device: cpu
min_workers: 1
max_workers: 3
model:
  in_channels: 3
  out_channels: 3
  patch_size: 2
  patch_size_t: 1
  hidden_size: 64
  depth: 2
  num_heads: 4
  mlp_ratio: 2
  text_dim: 32
flow_matching:
  adapter_type: simple
  timestep_sampling: logit_normal
  flow_shift: 1.0
data:
  manifest: /shared/data/demo/manifest.json
  shuffle: true
optimizer:
  lr: 1.0e-3
step_scheduler:
  global_batch_size: %d
  local_batch_size: 8
  max_steps: %d
  ckpt_every_steps: %d
  log_every_steps: 5
checkpoint:
  enabled: true
  checkpoint_dir: /shared/checkpoints/%s
  keep_last: 100
`, name, globalBatch, maxSteps, ckptEvery, name)
}

// fault is one scenario: inject breaks something while the job trains and
// returns when it has been undone (a stopped container started again, a cut
// network reconnected), so the next scenario starts from a whole cluster.
// recovered reports, from the status in etcd (and the coordinators), when
// the system has recovered from the fault.
type fault struct {
	name      string
	inject    func(c *cluster, at *api.JobStatus) (undo func())
	recovered func(c *cluster, at, now *api.JobStatus) bool
	// reforms: the fault must end the generation (a worker gone). Without
	// it the job must run to the end in its first generation: a new raft
	// leader or an etcd restart is no reason to stop training.
	reforms bool
	// lossless: the new generation must resume from a checkpoint at or
	// after the step the fault hit (a draining rank 0 checkpoints first).
	lossless bool
}

// reformed: a later generation is running and has made progress.
func reformed(_ *cluster, at, now *api.JobStatus) bool {
	return now.Generation > at.Generation && now.State == api.JobRunning &&
		now.LastCheckpoint != nil && now.Step > now.LastCheckpoint.Step || now.State == api.JobFinished
}

// advancing: the status in etcd moves past the step at the fault.
func advancing(_ *cluster, at, now *api.JobStatus) bool {
	return now.Step > at.Step
}

var faults = []fault{
	{
		// Not rank 0: rank 0 sees the peer go and checkpoints its last
		// completed step, which the survivors resume from.
		name:      "worker-stopped",
		inject:    stopRank(1),
		recovered: reformed,
		reforms:   true,
		lossless:  true,
	},
	{
		// Rank 0 drains: it checkpoints the step it stopped at, and the
		// survivors resume from there.
		name:      "rank0-stopped",
		inject:    stopRank(0),
		recovered: reformed,
		reforms:   true,
		lossless:  true,
	},
	{
		// Node loss: rank 0 (the checkpoint writer) dies without a word.
		name: "rank0-killed",
		inject: func(c *cluster, at *api.JobStatus) func() {
			if len(at.Workers) == 0 {
				c.t.Fatal("status names no workers: cannot tell rank 0")
			}
			rank0 := at.Workers[0]
			c.t.Logf("rank 0 is %s; killing it (SIGKILL)", rank0)
			c.docker("kill", c.container(rank0))
			return func() { c.docker("start", c.container(rank0)) }
		},
		recovered: reformed,
		reforms:   true,
	},
	{
		name: "leader-stopped",
		inject: func(c *cluster, _ *api.JobStatus) func() {
			leader := c.leader(coordinators, 10*time.Second)
			c.t.Logf("raft leader is %s; stopping it", leader)
			c.docker("stop", c.container(leader))
			var rest []string
			for _, s := range coordinators {
				if s != leader {
					rest = append(rest, s)
				}
			}
			t0 := time.Now()
			next := c.leader(rest, 30*time.Second)
			c.t.Logf("new raft leader %s after %v", next, time.Since(t0).Round(time.Millisecond))
			return func() { c.docker("start", c.container(leader)) }
		},
		recovered: advancing,
		reforms:   false,
	},
	{
		name: "worker-partitioned",
		inject: func(c *cluster, _ *api.JobStatus) func() {
			id := c.container("worker-2")
			c.docker("network", "disconnect", c.networkName(), id)
			// Reconnect after longer than the heartbeat timeout (the
			// coordinator must declare it lost, the ring must not hang on
			// it), while the test watches the recovery.
			done := make(chan error, 1)
			go func() {
				time.Sleep(heartbeatTimeout + 3*time.Second)
				out, err := c.output("docker", "network", "connect", "--alias", "worker-2", c.networkName(), id)
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out)
				}
				done <- err
			}()
			return func() {
				if err := <-done; err != nil {
					c.t.Fatalf("reconnecting worker-2: %v", err)
				}
			}
		},
		recovered: reformed,
		reforms:   true,
	},
	{
		name: "etcd-restarted",
		inject: func(c *cluster, _ *api.JobStatus) func() {
			c.docker("restart", "-t", "5", c.container("etcd"))
			return func() {}
		},
		recovered: advancing,
		reforms:   false,
	},
}

// stopRank stops (SIGTERM, then the worker drains) the worker holding rank r
// at the time of the fault, and starts it again afterwards.
func stopRank(r int) func(c *cluster, at *api.JobStatus) func() {
	return func(c *cluster, at *api.JobStatus) func() {
		if len(at.Workers) <= r {
			c.t.Fatalf("status names workers %v: no rank %d", at.Workers, r)
		}
		w := at.Workers[r]
		c.t.Logf("rank %d is %s; stopping it", r, w)
		c.docker("stop", c.container(w))
		return func() { c.docker("start", c.container(w)) }
	}
}

type result struct {
	fault                         string
	injection, recovery, duration time.Duration
	generations                   uint64
	restarts                      int
}

func TestMultiHostFaults(t *testing.T) {
	c := startCluster(t)
	var results []result
	for _, f := range faults {
		ok := t.Run(f.name, func(t *testing.T) {
			c.t = t
			results = append(results, runScenario(t, c, f))
		})
		c.t = t
		if !ok {
			break // the cluster may be broken; the logs are printed at teardown
		}
	}
	fmt.Printf("\nmulti-host fault tests (%d steps each, heartbeat timeout %v):\n", maxSteps, heartbeatTimeout)
	// recovery counts from the first fault command; "fault cmds" is how long
	// the docker commands themselves took (a restart, a 7 s partition).
	fmt.Printf("%-20s %12s %12s %12s %12s %9s\n", "fault", "fault cmds", "recovery", "job total", "generations", "restarts")
	for _, r := range results {
		fmt.Printf("%-20s %12v %12v %12v %12d %9d\n", r.fault, r.injection.Round(time.Millisecond), r.recovery.Round(time.Millisecond),
			r.duration.Round(time.Second), r.generations, r.restarts)
	}
}

func runScenario(t *testing.T, c *cluster, f fault) result {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	// A whole cluster first: three workers registered (a reconnected or
	// restarted one re-registers on its own).
	waitFor(t, ctx, "three registered workers", func() bool { return c.registeredWorkers() == 3 })

	name := "mh-" + f.name
	spec := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(spec, []byte(jobYAML(name)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := jobspec.Parse([]byte(jobYAML(name))); err != nil {
		t.Fatalf("the test's job spec: %v", err)
	}
	start := time.Now()
	id := strings.TrimSpace(c.fmctl("submit", "--etcd-endpoints", c.etcdURL, "--id", name, spec))
	t.Logf("submitted %s as job %s", name, id)

	// Let it train past its first checkpoint, then break something.
	var at *api.JobStatus
	waitFor(t, ctx, fmt.Sprintf("job %s at step %d", id, faultAfterStep), func() bool {
		st, err := c.jobStatus(ctx, id)
		if err != nil || st == nil {
			return false
		}
		if st.State.Terminal() {
			t.Fatalf("job %s is %s before the fault (step %d): make the job longer", id, st.State, st.Step)
		}
		at = st
		return st.State == api.JobRunning && st.Step >= faultAfterStep
	})
	t.Logf("fault %s at step %d, generation %d, workers %v", f.name, at.Step, at.Generation, at.Workers)
	t0 := time.Now()
	undo := f.inject(c, at)
	injected := time.Since(t0)
	t.Logf("%s: fault commands took %v", f.name, injected.Round(time.Millisecond))

	var recovery time.Duration
	waitFor(t, ctx, "recovery", func() bool {
		st, err := c.jobStatus(ctx, id)
		if err != nil || st == nil {
			return false
		}
		if st.State == api.JobFailed || st.State == api.JobCancelled {
			t.Fatalf("job %s %s after fault %s: %s", id, st.State, f.name, st.Error)
		}
		if f.recovered(c, at, st) {
			recovery = time.Since(t0)
			if f.lossless && st.State == api.JobRunning && (st.LastCheckpoint == nil || st.LastCheckpoint.Step < at.Step) {
				t.Errorf("after %s at step %d the job resumed from checkpoint %+v: steps were lost", f.name, at.Step, st.LastCheckpoint)
			}
			t.Logf("recovered from %s in %v: %s at step %d, generation %d, workers %v",
				f.name, recovery.Round(time.Millisecond), st.State, st.Step, st.Generation, st.Workers)
			return true
		}
		return false
	})
	undo()

	var final *api.JobStatus
	waitFor(t, ctx, "job "+id+" to finish", func() bool {
		st, err := c.jobStatus(ctx, id)
		if err != nil || st == nil {
			return false
		}
		if st.State.Terminal() {
			final = st
			return true
		}
		return false
	})
	checkFinished(t, c, id, name, final)
	switch {
	case f.reforms && (final.Generation < 2 || final.Restarts < 1):
		t.Errorf("job %s: generation %d, restarts %d: losing a worker must end its generation", id, final.Generation, final.Restarts)
	case !f.reforms && (final.Generation != 1 || final.Restarts != 0):
		t.Errorf("job %s: generation %d, restarts %d: %s must not re-form the job", id, final.Generation, final.Restarts, f.name)
	}
	return result{f.name, injected, recovery, time.Since(start), final.Generation, final.Restarts}
}

// checkFinished: the status in etcd says finished at exactly max_steps, the
// last checkpoint is the final step and every checkpoint on the shared
// volume verifies (header checksum, every file's size and sha256).
func checkFinished(t *testing.T, c *cluster, id, name string, st *api.JobStatus) {
	t.Helper()
	if st.State != api.JobFinished || st.Error != "" {
		t.Fatalf("job %s: state %s (error %q), want finished", id, st.State, st.Error)
	}
	if st.Step != maxSteps || st.MaxSteps != maxSteps {
		t.Errorf("job %s: status step %d of %d, want exactly %d", id, st.Step, st.MaxSteps, maxSteps)
	}
	if st.FinishedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("job %s: finished_at %v, started_at %v", id, st.FinishedAt, st.StartedAt)
	}
	if st.LastCheckpoint == nil || st.LastCheckpoint.Step != maxSteps {
		t.Errorf("job %s: last checkpoint %+v, want the one of step %d", id, st.LastCheckpoint, maxSteps)
	}
	dir := filepath.Join(c.shared, "checkpoints", name)
	all, err := checkpoint.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatalf("no checkpoints in %s", dir)
	}
	for _, p := range all {
		h, err := checkpoint.Verify(p)
		if err != nil {
			t.Errorf("corrupt checkpoint: %v", err)
			continue
		}
		// Every ckpt_every_steps, plus the one a draining rank 0 writes.
		if h.Step <= 0 || h.Step > maxSteps {
			t.Errorf("%s: step %d outside 1..%d", p, h.Step, maxSteps)
		}
		// Every step consumed exactly one global batch, across generations
		// of different world sizes: no sample repeated or skipped.
		if want := h.Step * globalBatch; h.DataPosition != want {
			t.Errorf("%s: data position %d after %d steps, want %d", p, h.DataPosition, h.Step, want)
		}
	}
	last, err := checkpoint.ReadHeader(all[len(all)-1])
	if err != nil {
		t.Fatal(err)
	}
	if last.Step != maxSteps {
		t.Errorf("newest checkpoint %s is step %d, want %d", all[len(all)-1], last.Step, maxSteps)
	}
	if lc := st.LastCheckpoint; lc != nil && (lc.Checksum != last.Checksum || lc.SamplesSeen != maxSteps*globalBatch) {
		t.Errorf("status last_checkpoint %+v does not match the newest checkpoint on disk (checksum %s, %d samples expected)",
			lc, last.Checksum, maxSteps*globalBatch)
	}
	t.Logf("job %s finished: step %d, %d checkpoints verified, generation %d, restarts %d", id, st.Step, len(all), st.Generation, st.Restarts)
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
