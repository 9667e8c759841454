package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/services"
	"github.com/fmtrain/fmtrain/telemetry"
)

// ClusterOptions configures a Cluster.
type ClusterOptions struct {
	// Dir holds everything the cluster writes: etcd, NATS, coordinator
	// state, worker logs. Required.
	Dir string
	// Exe and WorkerArgs start a worker process: Exe WorkerArgs... --flags.
	// The flags appended are fm-worker's (worker.ParseFlags).
	Exe        string
	WorkerArgs []string
	// WorkerEnv is added to each worker's environment.
	WorkerEnv []string
	// Fast tunes etcd and NATS for tests (no fsync, small limits).
	Fast bool
	// HeartbeatInterval and HeartbeatTimeout tune the coordinator's failure
	// detection (0: its defaults).
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// CollectiveTimeout is passed to every worker (0: the worker default).
	CollectiveTimeout time.Duration
	Logger            *slog.Logger
}

// Cluster is a whole fmtrain system on this machine: embedded etcd and
// NATS, a coordinator, and worker processes. `fmctl local` and the
// end-to-end tests use it. Its methods are safe for concurrent use.
type Cluster struct {
	opts  ClusterOptions
	log   *slog.Logger
	etcd  *services.Etcd
	nats  *services.NATS
	Etcd  *clientv3.Client
	NC    *nats.Conn
	JS    jetstream.JetStream
	coord *coordinatorProc

	mu      sync.Mutex
	workers map[string]*Proc
}

// Proc is a worker process.
type Proc struct {
	ID   string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (after Done).
func (p *Proc) Err() error { <-p.done; return p.err }

// StartCluster starts etcd, NATS (with the telemetry stream) and a
// coordinator, and returns once all three serve.
func StartCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	if opts.Dir == "" || opts.Exe == "" {
		return nil, errors.New("local: ClusterOptions need Dir and Exe")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{opts: opts, log: opts.Logger, workers: map[string]*Proc{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, d := range []string{"etcd", "nats", "coordinator", "logs"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	if c.etcd, err = services.StartEtcd(ctx, services.Options{Dir: filepath.Join(opts.Dir, "etcd"), Fast: opts.Fast}); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if c.Etcd, err = clientv3.New(clientv3.Config{Endpoints: c.etcd.Endpoints(), DialTimeout: 5 * time.Second}); err != nil {
		return nil, fmt.Errorf("local: etcd client: %w", err)
	}
	if c.nats, err = services.StartNATS(ctx, services.Options{Dir: filepath.Join(opts.Dir, "nats"), Fast: opts.Fast}); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if c.NC, err = nats.Connect(c.nats.ClientURL(), nats.Name("fmctl local")); err != nil {
		return nil, fmt.Errorf("local: connecting to NATS: %w", err)
	}
	if c.JS, err = jetstream.New(c.NC); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if err := telemetry.EnsureStream(ctx, c.JS, telemetry.StreamOptions{}); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if c.coord, err = startCoordinator(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is the cluster's state directory (logs/<worker id>.log live there).
func (c *Cluster) Dir() string { return c.opts.Dir }

// NATSURL is the NATS client URL workers and fmctl use.
func (c *Cluster) NATSURL() string { return c.nats.ClientURL() }

// EtcdEndpoints are etcd's client URLs.
func (c *Cluster) EtcdEndpoints() []string { return c.etcd.Endpoints() }

// CoordinatorURL is the coordinator's HTTP base URL.
func (c *Cluster) CoordinatorURL() string { return c.coord.url }

// StartWorker starts worker process id on the CPU. Its output goes to
// Dir/logs/<id>.log (appended: a restarted worker keeps its history).
func (c *Cluster) StartWorker(id string) (*Proc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.workers[id]; ok {
		select {
		case <-p.done:
		default:
			return nil, fmt.Errorf("local: worker %s is already running", id)
		}
	}
	logPath := filepath.Join(c.opts.Dir, "logs", id+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	args := append(append([]string(nil), c.opts.WorkerArgs...),
		"--id", id, "--coordinator", c.coord.url, "--nats-url", c.NATSURL(),
		"--device", "cpu", "--collective-addr", "127.0.0.1:0")
	if c.opts.CollectiveTimeout > 0 {
		args = append(args, "--collective-timeout", c.opts.CollectiveTimeout.String())
	}
	cmd := exec.Command(c.opts.Exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), c.opts.WorkerEnv...)
	// Own process group: a Ctrl-C in the terminal reaches fmctl, which
	// drains the workers itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("local: starting worker %s: %w", id, err)
	}
	p := &Proc{ID: id, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	c.workers[id] = p
	c.log.Info("worker started", "id", id, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

// Worker returns the process of worker id (nil if never started).
func (c *Cluster) Worker(id string) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[id]
}

// Kill sends SIGKILL to worker id (a crash) and waits until it is gone.
func (c *Cluster) Kill(id string) error {
	p := c.Worker(id)
	if p == nil {
		return fmt.Errorf("local: no worker %s", id)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("local: killing worker %s: %w", id, err)
	}
	<-p.done
	return nil
}

// Drain sends SIGTERM to worker id (a graceful stop: finish the step,
// leave) and waits until it has exited.
func (c *Cluster) Drain(ctx context.Context, id string) error {
	p := c.Worker(id)
	if p == nil {
		return fmt.Errorf("local: no worker %s", id)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("local: signalling worker %s: %w", id, err)
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("local: worker %s did not exit after SIGTERM: %w", id, ctx.Err())
	}
}

// StopWorkers drains every worker (SIGTERM), waiting up to grace before
// killing the ones still running.
func (c *Cluster) StopWorkers(grace time.Duration) {
	c.mu.Lock()
	procs := make([]*Proc, 0, len(c.workers))
	for _, p := range c.workers {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
}

// Submit stores a job spec under id (validated, create-only), as `fmctl
// submit` does.
func (c *Cluster) Submit(ctx context.Context, id string, spec []byte) error {
	if _, err := jobstore.Submit(ctx, c.Etcd, id, spec); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	return nil
}

// Status reads a job's status from etcd.
func (c *Cluster) Status(ctx context.Context, id string) (*api.JobStatus, error) {
	return jobstore.Status(ctx, c.Etcd, id)
}

// WaitDone waits until job id reaches a terminal state (or ctx ends).
func (c *Cluster) WaitDone(ctx context.Context, id string) (*api.JobStatus, error) {
	return jobstore.Wait(ctx, c.Etcd, id, func(*api.JobStatus) bool { return false })
}

// Close stops workers (drain, then kill), the coordinator, NATS and etcd.
func (c *Cluster) Close() {
	c.StopWorkers(20 * time.Second)
	if c.coord != nil {
		c.coord.stop()
	}
	if c.NC != nil {
		c.NC.Close()
	}
	if c.nats != nil {
		c.nats.Close()
	}
	if c.Etcd != nil {
		c.Etcd.Close()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// WorkerID is the id fmctl local gives its i-th worker.
func WorkerID(i int) string { return "local-" + strconv.Itoa(i) }

// tail returns the last n bytes of a file (worker logs in errors).
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
