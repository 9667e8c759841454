// Package train is fmtrain's training loop, used by `fmctl train` (one
// process) and by every worker of a distributed job (one rank each). One
// optimizer step, llm.c-style:
//
//	zero grads
//	for each micro-batch a of this rank (accumulation = G / (L·W)):
//	    batch ← data at global positions P + (a·W + rank)·L …   (data.Plan)
//	    res   ← flow Pipeline.Step(model, batch)                 (forward + loss + dLoss/dOutput)
//	    model.Backward(res.DModelOutputs[0] / accumulation)      (last micro-batch: grad-ready hook → reducer)
//	reducer.Wait                                                 (gradients averaged over ranks)
//	norm ← clip by global norm; AdamW(lr = schedule(step)); EMA
//	metrics; checkpoint on schedule
//
// Randomness is derived, never carried: the flow RNG of a micro-batch is
// seeded from (seed, the micro-batch's first global position) and text
// dropout from (seed, sample position), so a resumed run — with any world
// size — draws exactly what the uninterrupted run would have drawn.
//
// A Trainer is used by one goroutine at a time.
package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"time"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/flow"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/optim"
)

// Reducer averages the gradient buffer over the ranks of a generation while
// backward runs: Ready(lo, hi) hands over a final range (the model's
// grad-ready hook), Wait blocks until every range is reduced and resets for
// the next step. *collective.BucketReducer satisfies it.
type Reducer interface {
	Ready(lo, hi int)
	Wait(ctx context.Context) error
}

// ErrStopped is returned by Run when Options.Stop was closed: the step in
// progress was finished first.
var ErrStopped = errors.New("train: stopped at a step boundary")

// Options configure a Trainer. Spec, Net and Data are required.
type Options struct {
	Spec *jobspec.Spec
	// Net is the model to train, already initialised (see NewDiT).
	Net Net
	// Data is the opened dataset.
	Data *data.Dataset
	// Rank and World place this process in its generation (0 and 1 alone).
	Rank, World int
	// Reducer averages gradients across ranks; required when World > 1.
	Reducer Reducer
	// AverageScalars averages a few values across ranks (the logged loss);
	// nil logs this rank's values.
	AverageScalars func(ctx context.Context, vals []float32) error
	// ResumeFrom is a checkpoint directory to resume from; "" follows
	// spec.checkpoint.restore_from.
	ResumeFrom string
	// AfterInit runs once the weights are initialised or loaded, before the
	// first step (a worker broadcasts rank 0's weights here).
	AfterInit func(ctx context.Context, params []float32) error
	// OnStep is called after every step with this rank's numbers.
	OnStep func(Metrics)
	// OnMetrics is called every log_every_steps and after the last step,
	// with the loss averaged over ranks when AverageScalars is set. When
	// the averaging fails (a peer was lost after the step completed), it is
	// still called, with this rank's loss and LocalLoss set: the step is
	// done and checkpointed, so its numbers are not dropped.
	OnMetrics func(Metrics)
	// WriteCheckpoints makes this process write checkpoints (rank 0 only).
	WriteCheckpoints bool
	// OnCheckpoint runs on every rank at each checkpoint step, after the
	// writer has written (Path is "" on the other ranks).
	OnCheckpoint func(ctx context.Context, info CheckpointInfo) error
	// Stop, when closed, ends Run after the current step with ErrStopped.
	Stop   <-chan struct{}
	Logger *slog.Logger
}

// Metrics describe one optimizer step.
type Metrics struct {
	Step, TotalSteps int64 // steps done (this one included) and planned
	Epoch            int
	Loss             float64 // average weighted loss over micro-batches (and ranks)
	UnweightedLoss   float64
	// LocalLoss marks Loss and UnweightedLoss as this rank's alone: the
	// average across ranks could not be taken.
	LocalLoss     bool
	LR            float64
	GradNorm      float64 // global norm before clipping
	SigmaMin      float64
	SigmaMax      float64
	SigmaMean     float64
	SamplesPerSec float64 // global batch / step time
	StepTime      time.Duration
	Elapsed       time.Duration
}

// CheckpointInfo describes a checkpoint step.
type CheckpointInfo struct {
	Step int64
	// DataPosition is the global samples consumed up to Step (where the
	// next step starts reading).
	DataPosition int64
	Path         string // the written checkpoint ("" on ranks that do not write)
	// Checksum is the checkpoint header's checksum ("" on ranks that do not
	// write); the header in turn holds every file's SHA-256.
	Checksum string
}

// Result is the outcome of Run.
type Result struct {
	Step       int64   // steps done
	Loss       float64 // last step's loss
	Checkpoint string  // last checkpoint written by this process
}

// Trainer holds one rank's training state.
type Trainer struct {
	opts  Options
	spec  *jobspec.Spec
	log   *slog.Logger
	net   Net
	model FlowModel
	pipe  *flow.Pipeline
	rng   *switchRNG
	data  *data.Loader
	plan  data.Plan
	adam  *optim.AdamW
	norm  optim.DeviceNorm // nil: clip on the host
	sched optim.Schedule
	ema   *optim.EMA
	sync  kernels.Synchronizer // nil: every update finished on return

	step     int64 // optimizer steps done
	basePos  int64 // global position where step baseStep starts
	baseStep int64
	total    int64
	lastCkpt string
}

// New builds a trainer: validates the options, resumes from a checkpoint when
// asked (weights, moments, EMA, step, data position) and calls AfterInit.
func New(ctx context.Context, o Options) (*Trainer, error) {
	if o.Spec == nil || o.Net == nil || o.Data == nil {
		return nil, fmt.Errorf("train: Options need Spec, Net and Data")
	}
	if o.World == 0 {
		o.World = 1
	}
	if o.World > 1 && o.Reducer == nil {
		return nil, fmt.Errorf("train: world size %d needs a gradient Reducer", o.World)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := o.Spec
	st := s.StepScheduler
	t := &Trainer{opts: o, spec: s, log: o.Logger, net: o.Net, model: FlowModel{o.Net},
		plan: data.Plan{GlobalBatch: st.GlobalBatchSize, LocalBatch: st.LocalBatchSize, World: o.World, Rank: o.Rank}}
	if err := t.plan.Validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := checkData(s, o.Data); err != nil {
		return nil, err
	}
	t.total = TotalSteps(s, o.Data.Len())
	if t.total <= 0 {
		return nil, fmt.Errorf("train: the run has no steps (max_steps %d, num_epochs %d, %d samples, global batch %d)",
			st.MaxSteps, st.NumEpochs, o.Data.Len(), st.GlobalBatchSize)
	}
	var err error
	if t.sched, err = optim.NewSchedule(s.LRScheduler, s.Optimizer.LR, int(t.total)); err != nil {
		return nil, err
	}
	t.rng = &switchRNG{}
	if t.pipe, err = flow.CreatePipeline(s.FlowMatching, flow.Options{RNG: t.rng, Logger: o.Logger}); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	t.data = data.NewLoader(o.Data, s.Seed, s.Data.Shuffle)
	n := len(o.Net.Params())
	t.adam = optim.NewAdamW(n, s.Optimizer.Betas[0], s.Optimizer.Betas[1], s.Optimizer.Eps, s.Optimizer.WeightDecay)
	if s.EMA.Decay > 0 {
		t.ema = optim.NewEMA(o.Net.Params(), s.EMA.Decay, int64(s.EMA.StartStep))
	}
	// A backend that updates where the buffers live (CUDA) does AdamW,
	// clipping and the EMA itself; the host loops would drag every buffer
	// to the host.
	if b, ok := o.Net.(interface{ Backend() kernels.Backend }); ok {
		be := b.Backend()
		alloc, _ := be.(optim.Allocator)
		if dev, ok := be.(optim.DeviceAdamW); ok {
			t.adam.OnDevice(dev, alloc)
		}
		if dev, ok := be.(optim.DeviceEMA); ok && t.ema != nil {
			t.ema.OnDevice(dev, alloc)
		}
		t.norm, _ = be.(optim.DeviceNorm)
		t.sync, _ = be.(kernels.Synchronizer)
	}
	if err := t.resume(); err != nil {
		return nil, err
	}
	if o.AfterInit != nil {
		if err := o.AfterInit(ctx, o.Net.Params()); err != nil {
			return nil, fmt.Errorf("train: after init: %w", err)
		}
		if t.ema != nil && t.step == 0 {
			copy(t.ema.Shadow, o.Net.Params())
		}
	}
	return t, nil
}

// TotalSteps is the run's length: max_steps, or num_epochs' worth of full
// global batches, whichever is smaller when both are set.
func TotalSteps(s *jobspec.Spec, numSamples int) int64 {
	st := s.StepScheduler
	total := int64(st.MaxSteps)
	if st.NumEpochs > 0 {
		e := data.StepsForEpochs(st.NumEpochs, numSamples, st.GlobalBatchSize)
		if total == 0 || e < total {
			total = e
		}
	}
	return total
}

func checkData(s *jobspec.Spec, ds *data.Dataset) error {
	m := ds.Manifest
	if ds.Len() < s.StepScheduler.GlobalBatchSize {
		return fmt.Errorf("train: dataset %s has %d samples, fewer than global_batch_size (%d)", s.Data.Manifest, ds.Len(), s.StepScheduler.GlobalBatchSize)
	}
	d := s.Model.DiT
	if d.TextDim != 0 && d.TextDim != m.TextDim {
		return fmt.Errorf("train: model.text_dim (%d) does not match the dataset's text_dim (%d)", d.TextDim, m.TextDim)
	}
	if c := m.LatentShape[0]; d.InChannels != 0 {
		want, how := c, "the latents' channels"
		if s.FlowMatching.AdapterType == "hunyuan" {
			want, how = 2*c+1, "2C+1 (latents plus condition channels, hunyuan adapter)"
		}
		if d.InChannels != want || d.OutChannels != c {
			return fmt.Errorf("train: model.in_channels (%d) and out_channels (%d) must be %d (%s) and %d for latents %v",
				d.InChannels, d.OutChannels, want, how, c, m.LatentShape)
		}
	}
	return nil
}

// resume loads the checkpoint the options or the spec name, if any.
func (t *Trainer) resume() error {
	path := t.opts.ResumeFrom
	if path == "" {
		switch rf := t.spec.Checkpoint.RestoreFrom; rf {
		case "":
			return nil
		case "latest":
			p, skipped, err := checkpoint.Latest(t.spec.Checkpoint.CheckpointDir)
			if err != nil {
				return err
			}
			for _, e := range skipped {
				t.log.Warn("skipping damaged checkpoint", "err", e)
			}
			if p == "" {
				t.log.Info("no checkpoint to resume from; starting fresh", "dir", t.spec.Checkpoint.CheckpointDir)
				return nil
			}
			path = p
		default:
			path = rf
		}
	}
	st, err := checkpoint.Load(path, t.net.Layout())
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	copy(t.net.Params(), st.Params)
	if st.AdamM != nil {
		copy(t.adam.M, st.AdamM)
		copy(t.adam.V, st.AdamV)
		t.adam.Step = st.AdamStep
	}
	if t.ema != nil {
		if st.EMA != nil {
			copy(t.ema.Shadow, st.EMA)
		} else {
			copy(t.ema.Shadow, st.Params)
		}
	}
	t.step, t.baseStep, t.basePos = st.Step, st.Step, st.DataPosition
	t.log.Info("resumed", "checkpoint", path, "step", st.Step, "data_position", st.DataPosition)
	return nil
}

// Net returns the model being trained.
func (t *Trainer) Net() Net { return t.net }

// CurrentStep is the number of optimizer steps done.
func (t *Trainer) CurrentStep() int64 { return t.step }

// TotalStepCount is the number of steps the run makes in all.
func (t *Trainer) TotalStepCount() int64 { return t.total }

// EMA returns the EMA weights (nil without EMA).
func (t *Trainer) EMA() []float32 {
	if t.ema == nil {
		return nil
	}
	return t.ema.Shadow
}

// stepStart is the global data position where step s starts.
func (t *Trainer) stepStart(s int64) int64 {
	return t.basePos + (s-t.baseStep)*int64(t.plan.GlobalBatch)
}

// Run trains until the planned number of steps, Stop, or an error.
func (t *Trainer) Run(ctx context.Context) (*Result, error) {
	o, st := t.opts, t.spec.StepScheduler
	start := time.Now()
	res := &Result{Step: t.step}
	for t.step < t.total {
		m, err := t.Step(ctx)
		if err != nil {
			return res, err
		}
		m.Elapsed = time.Since(start)
		res.Step, res.Loss = t.step, m.Loss
		if o.OnStep != nil {
			o.OnStep(m)
		}
		last := t.step == t.total
		if o.OnMetrics != nil && (t.step%int64(st.LogEverySteps) == 0 || last) {
			if err := t.averageLoss(ctx, &m); err != nil {
				m.LocalLoss = true
				o.OnMetrics(m)
				return res, err
			}
			o.OnMetrics(m)
		}
		if t.spec.Checkpoint.Enabled && ((st.CkptEverySteps > 0 && t.step%int64(st.CkptEverySteps) == 0) || last) {
			if err := t.checkpointStep(ctx); err != nil {
				return res, err
			}
			res.Checkpoint = t.lastCkpt
		}
		select {
		case <-o.Stop:
			return res, fmt.Errorf("%w (step %d)", ErrStopped, t.step)
		default:
		}
	}
	return res, nil
}

func (t *Trainer) averageLoss(ctx context.Context, m *Metrics) error {
	if t.opts.AverageScalars == nil {
		return nil
	}
	v := []float32{float32(m.Loss), float32(m.UnweightedLoss)}
	if err := t.opts.AverageScalars(ctx, v); err != nil {
		return fmt.Errorf("train: averaging the loss: %w", err)
	}
	m.Loss, m.UnweightedLoss = float64(v[0]), float64(v[1])
	return nil
}

func (t *Trainer) checkpointStep(ctx context.Context) error {
	info := CheckpointInfo{Step: t.step, DataPosition: t.stepStart(t.step)}
	if t.opts.WriteCheckpoints {
		var err error
		if info, err = t.SaveCheckpoint(ctx); err != nil {
			return err
		}
	}
	if t.opts.OnCheckpoint != nil {
		return t.opts.OnCheckpoint(ctx, info)
	}
	return nil
}

// SaveCheckpoint writes a checkpoint of the state after the last completed
// step (see Save) and describes it. When that step's checkpoint was already
// written by this trainer, it is returned as is (a drain right after a
// scheduled checkpoint writes nothing twice).
func (t *Trainer) SaveCheckpoint(ctx context.Context) (CheckpointInfo, error) {
	info := CheckpointInfo{Step: t.step, DataPosition: t.stepStart(t.step)}
	if st, ok := checkpoint.StepOf(filepath.Base(t.lastCkpt)); !ok || st != t.step {
		if _, err := t.Save(ctx); err != nil {
			return info, err
		}
	}
	h, err := checkpoint.ReadHeader(t.lastCkpt)
	if err != nil {
		return info, err
	}
	info.Path, info.Checksum = t.lastCkpt, h.Checksum
	return info, nil
}

// Save writes a checkpoint of the current state into checkpoint_dir and
// returns its path.
func (t *Trainer) Save(ctx context.Context) (string, error) {
	spec, err := t.spec.Marshal()
	if err != nil {
		return "", err
	}
	cfg, err := t.net.ConfigJSON()
	if err != nil {
		return "", fmt.Errorf("train: model config: %w", err)
	}
	pos := t.stepStart(t.step)
	epoch := int(pos / int64(t.data.Dataset().Len()))
	st := &checkpoint.State{Step: t.step, DataPosition: pos, Epoch: epoch, Seed: t.spec.Seed,
		Spec: spec, ModelConfig: cfg, Layout: t.net.Layout(), Params: t.net.Params(),
		AdamM: t.adam.M, AdamV: t.adam.V, AdamStep: t.adam.Step, EMA: t.EMA()}
	p, err := checkpoint.Save(ctx, t.spec.Checkpoint.CheckpointDir, st, t.spec.Checkpoint.KeepLast)
	if err != nil {
		return "", err
	}
	t.lastCkpt = p
	t.log.Info("checkpoint written", "path", p, "step", t.step)
	return p, nil
}

// Step runs one optimizer step (see the package doc) and returns its
// metrics (this rank's loss).
func (t *Trainer) Step(ctx context.Context) (Metrics, error) {
	began := time.Now()
	net, s := t.net, t.spec
	accum := t.plan.Accumulation()
	start := t.stepStart(t.step)
	m := Metrics{Step: t.step + 1, TotalSteps: t.total, SigmaMin: math.Inf(1), SigmaMax: math.Inf(-1)}
	net.ZeroGrad()
	for a := 0; a < accum; a++ {
		positions := t.plan.Positions(start, a)
		batch, _, epoch, err := t.data.Batch(positions)
		if err != nil {
			return m, fmt.Errorf("train: step %d: %w", t.step+1, err)
		}
		m.Epoch = epoch
		dropText(batch, positions, s.Seed, s.Data.TextDropoutProb)
		t.rng.reset(s.Seed, positions[0])
		if a == accum-1 && t.opts.Reducer != nil {
			net.SetGradReadyHook(t.opts.Reducer.Ready)
		} else {
			net.SetGradReadyHook(nil)
		}
		res, err := t.pipe.Step(ctx, t.model, batch, flow.StepOptions{DType: flow.Float32, GlobalStep: int(t.step), CollectMetrics: false})
		if err != nil {
			return m, fmt.Errorf("train: step %d: %w", t.step+1, err)
		}
		loss := float64(res.AverageWeightedLoss)
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return m, fmt.Errorf("train: step %d: the loss is %v (lower optimizer.lr or check the data)", t.step+1, loss)
		}
		if len(res.DModelOutputs) == 0 || res.DModelOutputs[0] == nil {
			return m, fmt.Errorf("train: adapter %q gives no output gradient; fmtrain trains FM-DiT with simple or hunyuan", s.FlowMatching.AdapterType)
		}
		dOut := res.DModelOutputs[0].Data
		for i := range dOut {
			dOut[i] /= float32(accum)
		}
		if err := net.Backward(ctx, dOut); err != nil {
			return m, fmt.Errorf("train: step %d: backward: %w", t.step+1, err)
		}
		m.Loss += loss / float64(accum)
		m.UnweightedLoss += float64(res.Loss.AverageUnweightedLoss) / float64(accum)
		for _, sg := range res.Sigma {
			m.SigmaMin, m.SigmaMax = math.Min(m.SigmaMin, float64(sg)), math.Max(m.SigmaMax, float64(sg))
			m.SigmaMean += float64(sg) / float64(len(res.Sigma)*accum)
		}
	}
	if t.opts.Reducer != nil {
		if err := t.opts.Reducer.Wait(ctx); err != nil {
			return m, fmt.Errorf("train: step %d: gradient all-reduce: %w", t.step+1, err)
		}
	}
	m.GradNorm = optim.ClipGradNormOn(t.norm, net.Grads(), s.ClipGradNorm.MaxNorm)
	m.LR = t.sched.LR(int(t.step))
	if err := t.adam.Update(net.Params(), net.Grads(), m.LR); err != nil {
		return m, err
	}
	t.step++
	if t.ema != nil {
		if err := t.ema.Update(net.Params(), t.step); err != nil {
			return m, fmt.Errorf("train: step %d: EMA: %w", t.step, err)
		}
	}
	// The step's updates ran on the device when the backend has one: wait
	// for them, so checkpoints and callers read finished buffers (and a
	// device failure surfaces at the step that caused it).
	if t.sync != nil {
		if err := t.sync.Synchronize(); err != nil {
			return m, fmt.Errorf("train: step %d: %w", t.step, err)
		}
	}
	m.StepTime = time.Since(began)
	m.SamplesPerSec = float64(t.plan.GlobalBatch) / m.StepTime.Seconds()
	return m, nil
}
