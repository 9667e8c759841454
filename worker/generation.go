package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/fmtrain/fmtrain/collective"
	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/devices"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/cuda"
	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/fmtrain/fmtrain/train"
)

// runGeneration trains one assignment until the job's last step (nil), a
// stop request (errStopped), cancellation of gctx (context.Canceled; its
// cause says why) or a failure (fatalError when no new generation can fix
// it). workerCtx is the worker's own context: it outlives gctx, so rank 0
// can still checkpoint its last step after the generation was withdrawn.
func (w *Worker) runGeneration(workerCtx, ctx context.Context, a *api.Assignment, stop <-chan struct{}) error {
	spec, err := a.ParseSpec()
	if err != nil {
		return fatal(err)
	}
	g := &generation{w: w, a: a, spec: spec, started: time.Now()}
	g.log = w.log().With("job", a.JobID, "generation", a.Generation, "rank", a.Rank)
	if w.opts.NATS != nil {
		pub, err := telemetry.NewPublisher(w.opts.NATS, a.JobID, a.Rank)
		if err != nil {
			return fatal(err)
		}
		g.pub = pub
		g.log = slog.New(teeHandler{g.log.Handler(), telemetry.NewLogHandler(pub, w.opts.ID, slog.LevelInfo)})
		defer g.flush()
	}

	comm, err := w.ep.Join(ctx, collective.Rendezvous{
		JobID: a.JobID, Generation: a.Generation, Rank: a.Rank, WorldSize: a.WorldSize, Addrs: a.Peers,
	}, collective.Options{Timeout: w.opts.CollectiveTimeout, Logger: w.log()})
	if err != nil {
		return fmt.Errorf("worker: joining the ring of generation %d: %w", a.Generation, err)
	}
	defer comm.Close()
	g.comm = comm

	backend, err := w.openBackend()
	if err != nil {
		return fatal(fmt.Errorf("worker: %w", err))
	}
	if c, ok := backend.(io.Closer); ok {
		defer c.Close()
	}
	ds, err := data.Open(spec.Data.Manifest, data.OpenOptions{})
	if err != nil {
		return fatal(fmt.Errorf("worker: job %s: data.manifest: %w", a.JobID, err))
	}
	defer ds.Close()
	net, err := train.BuildNet(spec, backend)
	if err != nil {
		return fatal(fmt.Errorf("worker: job %s: model: %w", a.JobID, err))
	}
	var reducer train.Reducer
	if a.WorldSize > 1 {
		br, err := collective.NewBucketReducer(comm, net.Grads(), collective.BucketOptions{Op: collective.OpAverage})
		if err != nil {
			return fatal(fmt.Errorf("worker: %w", err))
		}
		defer br.Close()
		reducer = br
	}
	var resume string
	if a.ResumeFrom != nil {
		resume = a.ResumeFrom.Path
	}
	g.log.Info("training", "world", a.WorldSize, "start_step", a.StartStep, "grad_accum", a.GradAccum,
		"resume_from", resume, "device", w.device.String())
	tr, err := train.New(ctx, train.Options{
		Spec: spec, Net: net, Data: ds, Rank: a.Rank, World: a.WorldSize, Reducer: reducer,
		AverageScalars: func(ctx context.Context, xs []float32) error {
			return comm.AllReduce(ctx, xs, collective.OpAverage)
		},
		ResumeFrom: resume,
		AfterInit: func(ctx context.Context, params []float32) error {
			// Every rank starts the generation from rank 0's weights.
			return comm.Broadcast(ctx, params, 0)
		},
		OnStep:           g.onStep,
		OnMetrics:        g.onMetrics,
		OnCheckpoint:     g.onCheckpoint,
		WriteCheckpoints: a.Rank == 0,
		Stop:             stop,
		Logger:           g.log,
	})
	if err != nil {
		return classify(err)
	}
	res, err := tr.Run(ctx)
	if err == nil {
		return nil
	}
	if workerCtx.Err() == nil && keepsLastStep(ctx, err) {
		// Not under ctx: a withdrawal cancels it while (or before) the
		// checkpoint is written, and the coordinator is waiting for it.
		g.saveLastStep(workerCtx, tr, res)
	}
	if errors.Is(err, train.ErrStopped) {
		return errStopped
	}
	return classify(err)
}

// Why a generation's context was cancelled by the worker's driver. Both
// wrap context.Canceled: code that reports the cause (the collective does)
// still reads as a cancellation, not as a fatal failure.
var (
	// errWithdrawn: the coordinator withdrew the generation (the job
	// re-forms after a failure and waits for its members to stop).
	errWithdrawn = fmt.Errorf("worker: generation withdrawn by the coordinator: %w", context.Canceled)
	// errSuperseded: a newer generation of the job was assigned.
	errSuperseded = fmt.Errorf("worker: generation superseded by a newer one: %w", context.Canceled)
)

// keepsLastStep reports whether a generation that ended with err should
// have rank 0 checkpoint its last completed step: a drain, a collective
// failure (a lost peer, noticed here or by another rank that made the
// coordinator withdraw the generation), but not a superseded generation (its successor resumes from
// a checkpoint already chosen, which a newer one could rotate away) nor a
// fatal error (the job fails).
func keepsLastStep(ctx context.Context, err error) bool {
	switch {
	case errors.Is(err, train.ErrStopped):
		return true
	case ctx.Err() != nil:
		return errors.Is(context.Cause(ctx), errWithdrawn)
	default:
		return !isFatal(classify(err))
	}
}

// saveLastStep makes a drain, a lost peer or a withdrawal cost no steps:
// rank 0 writes a checkpoint of the last step it completed (unless it just
// wrote one) and reports it, so the job re-forms from exactly there. Rank
// 0's state is that step's: the weights and optimizer state are identical
// on every rank after a step, and a step that fails or is cancelled
// (gradient all-reduce, compute) returns before the optimizer runs.
func (g *generation) saveLastStep(ctx context.Context, tr *train.Trainer, res *train.Result) {
	if g.a.Rank != 0 || !g.spec.Checkpoint.Enabled || res == nil || res.Step == 0 {
		return
	}
	info, err := tr.SaveCheckpoint(ctx)
	if err != nil {
		g.log.Warn("writing a checkpoint of the last step failed; the job resumes from the previous one", "step", res.Step, "err", err)
		return
	}
	g.report(ctx, info)
}

// classify marks an error fatal unless a new generation may fix it: a lost
// or closed peer, a collective timeout, or cancellation.
func classify(err error) error {
	switch {
	case errors.Is(err, collective.ErrPeerLost), errors.Is(err, collective.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fatal(err)
}

// openBackend opens the compute backend of the worker's device: the CPU
// backend, or the CUDA backend (bf16 mixed precision) on the resolved GPU,
// chosen by PCI bus id so NVML and CUDA agree about which card it is.
func (w *Worker) openBackend() (kernels.Backend, error) {
	if w.device.Kind != devices.CUDA {
		return kernels.Open("cpu")
	}
	return cuda.Open(cuda.Options{Ordinal: w.device.GPU.Ordinal, PCIBusID: w.device.GPU.PCIBusID, BF16: true, Logger: w.log()})
}

// generation is the state of one assignment's training, shared by the train
// loop's callbacks (which run on the training goroutine).
type generation struct {
	w       *Worker
	a       *api.Assignment
	spec    *jobspec.Spec
	log     *slog.Logger
	pub     *telemetry.Publisher
	comm    collective.Communicator
	started time.Time
	first   bool // the first step of this generation is done
}

func (g *generation) onStep(m train.Metrics) {
	step := m.Step
	g.w.step.Store(step)
	if g.first {
		return
	}
	g.first = true
	g.log.Info("first step of the generation", "step", step, "since_assignment", time.Since(g.started).Round(time.Millisecond))
	if g.pub != nil && g.a.Rank == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rank := 0
		if err := g.pub.Event(ctx, telemetry.Event{Kind: telemetry.EventFirstStep, Generation: g.a.Generation, Step: step,
			WorldSize: g.a.WorldSize, Rank: &rank, Worker: g.w.opts.ID}); err != nil {
			g.log.Warn("publishing the first_step event", "err", err)
		}
	}
}

func (g *generation) onMetrics(m train.Metrics) {
	if g.pub == nil {
		return
	}
	tm := telemetry.Metrics{
		WorldSize: g.a.WorldSize, Generation: g.a.Generation,
		Step: m.Step, MaxSteps: m.TotalSteps, Epoch: int64(m.Epoch),
		SamplesSeen: m.Step * int64(g.spec.StepScheduler.GlobalBatchSize),
		Loss:        m.Loss, UnweightedLoss: m.UnweightedLoss, LocalLoss: m.LocalLoss, LR: m.LR, GradNorm: m.GradNorm,
		SamplesPerSec: m.SamplesPerSec, StepSeconds: m.StepTime.Seconds(),
		Sigma:  &telemetry.SigmaStats{Min: m.SigmaMin, Max: m.SigmaMax, Mean: m.SigmaMean},
		Device: g.w.deviceStats(),
	}
	if err := g.pub.Metrics(tm); err != nil {
		g.log.Warn("publishing metrics", "err", err)
	}
}

// onCheckpoint runs on every rank once rank 0 has written a checkpoint:
// rank 0 reports it to the coordinator, then all ranks wait for each other
// so no rank runs ahead of a checkpoint the others have not seen complete.
func (g *generation) onCheckpoint(ctx context.Context, info train.CheckpointInfo) error {
	if g.a.Rank == 0 && info.Path != "" {
		g.report(ctx, info)
	}
	return g.comm.Barrier(ctx)
}

// report tells the coordinator about a complete checkpoint. A failed
// report is logged, not fatal: the coordinator then resumes from an older
// checkpoint if this generation fails.
func (g *generation) report(ctx context.Context, info train.CheckpointInfo) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := g.w.opts.Coordinator.Report(rctx, api.Report{
		WorkerID: g.w.opts.ID, JobID: g.a.JobID, Generation: g.a.Generation, Kind: api.ReportCheckpoint, Step: info.Step,
		Checkpoint: &api.Checkpoint{Path: info.Path, Checksum: info.Checksum, Step: info.Step, SamplesSeen: info.DataPosition},
	})
	if err != nil {
		g.log.Warn("reporting the checkpoint failed", "path", info.Path, "err", err)
		return
	}
	g.log.Info("checkpoint reported", "path", info.Path, "step", info.Step)
}

func (g *generation) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.pub.Flush(ctx); err != nil {
		g.w.log().Warn("flushing telemetry", "err", err)
	}
}

// deviceStats samples the device for a metrics message: NVML for a GPU, the
// Go runtime's view of the process for the CPU.
func (w *Worker) deviceStats() *telemetry.DeviceStats {
	if w.device.Kind == devices.CUDA {
		st, err := w.opts.Devices.Stats(w.device)
		if err != nil {
			return nil
		}
		return &telemetry.DeviceStats{
			Kind: "cuda", Index: w.device.GPU.Ordinal, Name: w.device.GPU.Name,
			UtilPercent: st.UtilGPUPercent, MemoryUsedBytes: st.MemoryUsedBytes, MemoryTotalBytes: st.MemoryTotalBytes,
			TemperatureC: st.TemperatureC, PowerWatts: st.PowerWatts,
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &telemetry.DeviceStats{Kind: "cpu", Name: fmt.Sprintf("%d CPUs", runtime.NumCPU()), MemoryUsedBytes: ms.Sys}
}

// teeHandler sends every record to two handlers (console and NATS).
type teeHandler struct{ a, b slog.Handler }

var _ slog.Handler = teeHandler{}

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.a.Enabled(ctx, r.Level) {
		err = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		err = errors.Join(err, t.b.Handle(ctx, r))
	}
	return err
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{t.a.WithGroup(name), t.b.WithGroup(name)}
}
