//go:build multihost

package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/coordinator/api"
)

// TestSlurmPreemptAndRequeue runs deploy/slurm/fmtrain.sbatch for real on
// this host, with srun and scontrol replaced by stand-ins that run a step's
// tasks locally (deploy/multihost/slurmstub): the script starts etcd, NATS,
// a coordinator and two CPU workers, submits the job, and is sent SIGUSR1 (the
// time-limit warning) mid-training. It must drain the workers — rank 0
// writing a checkpoint of the step it stopped at —, stop everything and
// requeue. The requeued run (same Slurm job id) must resume from that
// checkpoint and finish the job at exactly max_steps, and leave no process.
func TestSlurmPreemptAndRequeue(t *testing.T) {
	root := repoRoot(t)
	for _, port := range []int{2379, 2380, 4222, 8222, 7000, 7070, 7080, 7081, 7100, 7101} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("the Slurm script uses fixed ports and %d is taken here: %v", port, err)
		}
		l.Close()
	}
	stubs := filepath.Join(root, "deploy", "multihost", "slurmstub")
	submit := t.TempDir()
	name := "slurm-preempt"
	spec := filepath.Join(submit, "job.yaml")
	job := strings.NewReplacer(
		"/shared/data/demo/manifest.json", filepath.Join(submit, "data", "manifest.json"),
		"/shared/checkpoints/"+name, filepath.Join(submit, "checkpoints"),
		"max_workers: 3", "max_workers: 2",
	).Replace(jobYAML(name))
	if err := os.WriteFile(spec, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	fmctl := filepath.Join(root, "bin", "deploy", "fmctl")
	if out, err := exec.Command(fmctl, "data", "synth", filepath.Join(submit, "data")).CombinedOutput(); err != nil {
		t.Fatalf("fmctl data synth: %v\n%s", err, out)
	}

	env := append(os.Environ(),
		"PATH="+stubs+":"+os.Getenv("PATH"),
		"SLURM_STUB_DIR="+submit,
		"SLURM_JOB_ID=4242", "SLURM_JOB_NODELIST=localhost", "SLURM_NNODES=1", "SLURM_SUBMIT_DIR="+submit,
		"FMTRAIN_BIN="+filepath.Join(root, "bin", "deploy"),
		"FMTRAIN_GPUS_PER_NODE=2", "FMTRAIN_WORKER_DEVICE=cpu", "FMTRAIN_POLL_SECONDS=1",
		"TMPDIR="+submit,
	)
	jobID := "slurm-4242"
	etcd := "http://127.0.0.1:2379"

	// jobStatus asks fmctl, as an operator would, while the script runs.
	jobStatus := func() *api.JobStatus {
		cmd := exec.Command(fmctl, "status", "--json", "--etcd-endpoints", etcd, jobID)
		out, err := cmd.Output()
		if err != nil {
			return nil
		}
		var st api.JobStatus
		if json.Unmarshal(out, &st) != nil {
			return nil
		}
		return &st
	}

	// First allocation: preempted once the job is past its first checkpoints.
	first := startSbatch(t, root, env, spec, filepath.Join(submit, "first.log"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var at *api.JobStatus
	waitFor(t, ctx, "the job to pass step "+fmt.Sprint(faultAfterStep), func() bool {
		at = jobStatus()
		return at != nil && at.State == api.JobRunning && at.Step >= faultAfterStep
	})
	t.Logf("SIGUSR1 to the batch script at step %d", at.Step)
	t0 := time.Now()
	if err := first.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := first.wait(2 * time.Minute); err != nil {
		t.Fatalf("first allocation after SIGUSR1: %v\n%s", err, first.log())
	}
	t.Logf("first allocation drained and exited %v after SIGUSR1", time.Since(t0).Round(time.Millisecond))
	first.checkNothingLeft(t)
	if b, err := os.ReadFile(filepath.Join(submit, "requeued")); err != nil || strings.TrimSpace(string(b)) != "4242" {
		t.Fatalf("the script did not requeue job 4242 (scontrol requeue): %q, %v", b, err)
	}
	all, err := checkpoint.List(filepath.Join(submit, "checkpoints"))
	if err != nil || len(all) == 0 {
		t.Fatalf("no checkpoints after the preemption: %v", err)
	}
	drained, err := checkpoint.Verify(all[len(all)-1])
	if err != nil {
		t.Fatal(err)
	}
	if drained.Step < at.Step {
		t.Fatalf("newest checkpoint is step %d, before the step %d seen at SIGUSR1: the drain wrote none", drained.Step, at.Step)
	}
	t.Logf("rank 0 checkpointed step %d on the way out", drained.Step)

	// The requeued allocation: same Slurm job id, so the same fmtrain job,
	// which resumes from the drain checkpoint (no step lost) and finishes.
	second := startSbatch(t, root, env, spec, filepath.Join(submit, "second.log"))
	if err := second.wait(4 * time.Minute); err != nil {
		t.Fatalf("requeued allocation: %v\n%s", err, second.log())
	}
	second.checkNothingLeft(t)
	if !strings.Contains(second.log(), "already submitted (requeued allocation)") {
		t.Errorf("the requeued allocation did not find its job:\n%s", second.log())
	}
	if !strings.Contains(second.log(), fmt.Sprintf("checkpoint=%s", all[len(all)-1])) {
		t.Errorf("the requeued allocation did not resume from the drain checkpoint %s (steps since the last periodic checkpoint were lost)\n--- first allocation:\n%s\n--- requeued allocation:\n%s",
			all[len(all)-1], first.log(), second.log())
	}
	all, err = checkpoint.List(filepath.Join(submit, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		h, err := checkpoint.Verify(p)
		if err != nil {
			t.Errorf("corrupt checkpoint: %v", err)
		} else if h.DataPosition != h.Step*globalBatch {
			t.Errorf("%s: data position %d after %d steps, want %d", p, h.DataPosition, h.Step, h.Step*globalBatch)
		}
	}
	last, err := checkpoint.ReadHeader(all[len(all)-1])
	if err != nil || last.Step != maxSteps {
		t.Fatalf("newest checkpoint %v (%v): want step %d", all[len(all)-1], err, maxSteps)
	}
}

// sbatch is one run of the batch script, in a process group of its own so
// that anything it leaves behind can be found (and killed).
type sbatch struct {
	*exec.Cmd
	logPath string
	done    chan error
}

func startSbatch(t *testing.T, root string, env []string, spec, logPath string) *sbatch {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "slurm", "fmtrain.sbatch"), spec)
	cmd.Env = env
	cmd.Dir = filepath.Dir(spec)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sbatch{Cmd: cmd, logPath: logPath, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return s
}

func (s *sbatch) wait(limit time.Duration) error {
	select {
	case err := <-s.done:
		return err
	case <-time.After(limit):
		return fmt.Errorf("still running after %v", limit)
	}
}

func (s *sbatch) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// checkNothingLeft: no process of the script's group survives it.
func (s *sbatch) checkNothingLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-s.Process.Pid, 0) == nil {
		if time.Now().After(deadline) {
			out, _ := exec.Command("ps", "-o", "pid,args", "-g", fmt.Sprint(s.Process.Pid)).CombinedOutput()
			t.Fatalf("processes left behind by the batch script:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
