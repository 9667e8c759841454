package worker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fmtrain/fmtrain/collective"
	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/devices"
	"github.com/fmtrain/fmtrain/telemetry"
)

// Coordinator is what a worker needs of the coordinator protocol
// (coordinator/api's Client implements it over HTTP).
type Coordinator interface {
	Register(ctx context.Context, req api.RegisterRequest) (*api.RegisterResponse, error)
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (*api.HeartbeatResponse, error)
	Report(ctx context.Context, r api.Report) (*api.ReportResponse, error)
	Leave(ctx context.Context, req api.LeaveRequest) error
}

// Options configures a Worker. Coordinator is required; every other field
// has a working default.
type Options struct {
	// ID is the worker's stable, cluster-unique id (default
	// <hostname>-<device>, e.g. node1-cuda0).
	ID string
	// Coordinator is the coordinator protocol client.
	Coordinator Coordinator
	// NATS carries metrics, logs and events; nil publishes nothing (the
	// worker says so once).
	NATS *nats.Conn
	// Device is the --device flag: auto (default), cpu, cuda or cuda:N.
	Device string
	// LocalRank picks the GPU for auto/cuda on a host with one worker per
	// GPU (LOCAL_RANK in torchrun terms).
	LocalRank int
	// Devices is the host's device inventory; nil opens it (NVML).
	Devices *devices.Host
	// CollectiveAddr is where the all-reduce endpoint listens (default
	// 127.0.0.1:0); CollectiveAdvertise is the host:port peers dial
	// (default: the listener's address, its host replaced by the first
	// non-loopback IP when it listens on all interfaces).
	CollectiveAddr      string
	CollectiveAdvertise string
	// CollectiveTimeout bounds every collective operation (default 30 s): a
	// dead peer ends the generation within it.
	CollectiveTimeout time.Duration
	// DrainTimeout is how long a drain waits for the current step before it
	// aborts it (default 60 s).
	DrainTimeout time.Duration
	// HTTPAddr is the worker's health endpoint, reported to the coordinator.
	HTTPAddr string
	// Logger receives the worker's own log; nil discards it.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultCollectiveAddr    = "127.0.0.1:0"
	DefaultCollectiveTimeout = 30 * time.Second
	DefaultDrainTimeout      = 60 * time.Second
	// DefaultHeartbeatInterval is used until the coordinator says otherwise.
	DefaultHeartbeatInterval = time.Second
	registerRetry            = 500 * time.Millisecond
)

// Worker is one fm-worker. Create it with New, run it with Run (once), stop it
// with Shutdown (drain) or by cancelling Run's context (abort). Ready, Phase
// and Shutdown may be called from any goroutine.
type Worker struct {
	opts Options

	ready     chan struct{}
	drain     chan struct{}
	drainOnce sync.Once
	done      chan struct{}

	phase atomic.Int32 // Phase, for Phase()
	step  atomic.Int64 // last completed step of the running generation

	// incarnation identifies this run of the worker (a retried
	// registration of the same run is a no-op at the coordinator).
	incarnation string

	// set up by Run before the first generation
	device     devices.Device
	ep         *collective.Endpoint
	advertised string
	publishing bool
}

// New validates opts and returns a worker that has not started.
func New(opts Options) (*Worker, error) {
	if opts.Coordinator == nil {
		return nil, errors.New("worker: Options.Coordinator is required")
	}
	if opts.Device == "" {
		opts.Device = "auto"
	}
	if _, err := devices.ParseSpec(opts.Device); err != nil {
		return nil, fmt.Errorf("worker: --device: %w", err)
	}
	if opts.CollectiveAddr == "" {
		opts.CollectiveAddr = DefaultCollectiveAddr
	}
	if opts.CollectiveTimeout <= 0 {
		opts.CollectiveTimeout = DefaultCollectiveTimeout
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Worker{opts: opts, ready: make(chan struct{}), drain: make(chan struct{}), done: make(chan struct{}),
		incarnation: rand.Text()}
	w.phase.Store(int32(PhaseRegistering))
	return w, nil
}

// Ready is closed once the worker has registered with a coordinator.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Phase is the worker's current phase.
func (w *Worker) Phase() Phase { return Phase(w.phase.Load()) }

// ID is the worker's id (known once Run has resolved the device).
func (w *Worker) ID() string { return w.opts.ID }

// Shutdown asks the worker to drain: the running generation finishes its
// current step, the worker leaves the coordinator and Run returns. It waits
// until Run has returned or ctx ends.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.drainOnce.Do(func() { close(w.drain) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("worker %s: shutdown: %w", w.opts.ID, ctx.Err())
	}
}

// running is one generation in flight.
type running struct {
	a      *api.Assignment
	cancel context.CancelCauseFunc
	stop   chan struct{} // closed: finish the step and return
}

// genResult is how a generation ended.
type genResult struct {
	key  GenerationKey
	a    *api.Assignment
	step int64 // last step completed
	err  error
}

// Run registers, then trains whatever the coordinator assigns until Shutdown
// (returns nil after leaving) or ctx ends (aborts the running generation and
// returns nil). Setup failures (bad device, no listen address) are returned.
func (w *Worker) Run(ctx context.Context) error {
	defer close(w.done)
	if err := w.setup(ctx); err != nil {
		return err
	}
	defer w.ep.Close()

	interval, err := w.register(ctx)
	if err != nil {
		return nil // ctx ended before a coordinator answered
	}
	lc := NewLifecycle()
	lc.Registered()
	w.phase.Store(int32(lc.Phase()))
	close(w.ready)

	var (
		cur        *running
		latest     *api.Assignment // the newest assignment seen, by key
		results    = make(chan genResult, 1)
		drain      = w.drain
		drainTimer <-chan time.Time
	)
	start := func(a *api.Assignment) {
		gctx, cancel := context.WithCancelCause(ctx)
		cur = &running{a: a, cancel: cancel, stop: make(chan struct{})}
		w.step.Store(a.StartStep)
		go func(r *running) {
			err := w.runGeneration(ctx, gctx, r.a, r.stop)
			results <- genResult{key: keyOf(r.a), a: r.a, step: w.step.Load(), err: err}
		}(cur)
	}
	exec := func(actions []Action) (exit bool) {
		for _, act := range actions {
			switch act.Kind {
			case ActionStart:
				w.log().Info("starting generation", "job", latest.JobID, "generation", latest.Generation,
					"rank", latest.Rank, "world", latest.WorldSize, "start_step", latest.StartStep)
				start(latest)
			case ActionStop:
				if lc.Draining() {
					close(cur.stop) // finish the step, then return
					drainTimer = time.After(w.opts.DrainTimeout)
				} else if act.Withdrawn {
					cur.cancel(errWithdrawn) // rank 0 still checkpoints its last step
				} else {
					cur.cancel(errSuperseded) // the new generation resumes from a checkpoint
				}
			case ActionExit:
				exit = true
			}
		}
		w.phase.Store(int32(lc.Phase()))
		return exit
	}

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	heartbeat := func() (exit bool) {
		req := api.HeartbeatRequest{WorkerID: w.opts.ID}
		if k, ok := lc.Training(); ok {
			req.JobID, req.Generation, req.Step = k.Job, k.Generation, w.step.Load()
		}
		hctx, cancel := context.WithTimeout(ctx, 2*interval+time.Second)
		resp, err := w.opts.Coordinator.Heartbeat(hctx, req)
		cancel()
		switch {
		case errors.Is(err, api.ErrUnknownWorker):
			// The coordinator declared us lost; our generation is gone.
			w.log().Warn("coordinator does not know this worker; registering again")
			if _, err := w.register(ctx); err != nil {
				return false
			}
			acts := lc.Assigned(nil)
			for i := range acts {
				// Not a withdrawal: the job re-forms (or has) without us,
				// and a checkpoint written now could rotate away the one
				// its next generation resumes from.
				acts[i].Withdrawn = false
			}
			return exec(acts)
		case err != nil:
			if ctx.Err() == nil {
				w.log().Warn("heartbeat failed", "err", err)
			}
			return false
		}
		var key *GenerationKey
		if resp.Assignment != nil {
			latest = resp.Assignment
			k := keyOf(latest)
			key = &k
		}
		return exec(lc.Assigned(key))
	}

	if heartbeat() {
		return w.leave()
	}
	for {
		select {
		case <-ctx.Done():
			if cur != nil {
				cur.cancel(nil)
				<-results
			}
			return nil
		case <-drain:
			drain = nil
			w.log().Info("draining: finishing the current step, then leaving")
			draining := cur
			step := w.step.Load()
			if exec(lc.Drain()) {
				return w.leave()
			}
			if draining != nil {
				// After the stop request, so the event's step is the one
				// the stop came after (the step in progress still ends).
				w.publishDraining(draining.a, step)
			}
		case <-drainTimer:
			if cur != nil {
				w.log().Warn("drain timeout: aborting the current step", "timeout", w.opts.DrainTimeout)
				cur.cancel(nil)
			}
		case r := <-results:
			cur.cancel(nil)
			cur = nil
			w.reportEnd(ctx, r)
			if exec(lc.Ended(r.key)) {
				return w.leave()
			}
		case <-ticker.C:
			if heartbeat() {
				return w.leave()
			}
		}
	}
}

func keyOf(a *api.Assignment) GenerationKey {
	return GenerationKey{Job: a.JobID, Generation: a.Generation}
}

func (w *Worker) log() *slog.Logger { return w.opts.Logger }

// setup resolves the device, opens the collective endpoint and fills the id.
func (w *Worker) setup(ctx context.Context) error {
	host := w.opts.Devices
	if host == nil {
		h, err := devices.Open()
		if err != nil {
			return fmt.Errorf("worker: opening devices: %w", err)
		}
		host = h
		w.opts.Devices = h
	}
	res, err := host.Resolve(w.opts.Device, w.opts.LocalRank)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w.device = res.Device
	if res.Fallback != "" {
		w.log().Info("running on the CPU", "why", res.Fallback)
	}
	if w.opts.ID == "" {
		hn, err := os.Hostname()
		if err != nil {
			hn = "worker"
		}
		dev := "cpu"
		if res.Device.Kind == devices.CUDA {
			dev = "cuda" + strconv.Itoa(res.Device.GPU.Ordinal)
		}
		w.opts.ID = hn + "-" + dev
	}
	w.opts.Logger = w.opts.Logger.With("worker", w.opts.ID)
	ep, err := collective.Listen(ctx, w.opts.CollectiveAddr)
	if err != nil {
		return fmt.Errorf("worker: collective endpoint on %s: %w", w.opts.CollectiveAddr, err)
	}
	w.ep = ep
	w.advertised = w.opts.CollectiveAdvertise
	if w.advertised == "" {
		w.advertised = advertiseAddr(ep.Addr())
	}
	w.publishing = w.opts.NATS != nil
	if !w.publishing {
		w.log().Warn("no NATS connection: metrics, logs and events are not published")
	}
	return nil
}

// advertiseAddr turns a listen address into one peers can dial: an
// unspecified host (0.0.0.0, ::) becomes the first non-loopback address.
func advertiseAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return listen
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return net.JoinHostPort(ipn.IP.String(), port)
			}
		}
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// register retries until a coordinator accepts the worker or ctx ends, and
// returns the heartbeat interval to use.
func (w *Worker) register(ctx context.Context) (time.Duration, error) {
	hn, _ := os.Hostname()
	req := api.RegisterRequest{
		WorkerID: w.opts.ID, Host: hn, Device: w.device.String(),
		CollectiveAddr: w.advertised, HTTPAddr: w.opts.HTTPAddr, Incarnation: w.incarnation,
	}
	if w.device.GPU != nil {
		req.DeviceName = w.device.GPU.Name
	}
	for attempt := 0; ; attempt++ {
		resp, err := w.opts.Coordinator.Register(ctx, req)
		if err == nil {
			interval := time.Duration(resp.HeartbeatInterval)
			if interval <= 0 {
				interval = DefaultHeartbeatInterval
			}
			w.log().Info("registered", "device", req.Device, "collective", req.CollectiveAddr, "heartbeat", interval)
			return interval, nil
		}
		if attempt%10 == 0 && ctx.Err() == nil {
			w.log().Warn("registering with the coordinator failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(registerRetry):
		}
	}
}

// leave tells the coordinator the worker is going, best effort.
func (w *Worker) leave() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.opts.Coordinator.Leave(ctx, api.LeaveRequest{WorkerID: w.opts.ID, Reason: "shutdown"}); err != nil {
		w.log().Warn("leaving the coordinator failed (it will notice the missing heartbeats)", "err", err)
	} else {
		w.log().Info("left the coordinator")
	}
	return nil
}

// publishDraining tells the job's watchers this worker is leaving.
func (w *Worker) publishDraining(a *api.Assignment, step int64) {
	if w.opts.NATS == nil {
		return
	}
	pub, err := telemetry.NewPublisher(w.opts.NATS, a.JobID, a.Rank)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rank := a.Rank
		err = pub.Event(ctx, telemetry.Event{Kind: telemetry.EventWorkerDraining, Generation: a.Generation,
			Step: step, Worker: w.opts.ID, Rank: &rank})
	}
	if err != nil {
		w.log().Warn("publishing the worker_draining event", "err", err)
	}
}
