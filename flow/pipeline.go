package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Options are a pipeline's collaborators.
type Options struct {
	// RNG supplies every random draw. Nil means NewRNG(0, 0); production
	// code passes NewRNG(seed, rank) and checkpoints it.
	RNG RNG
	// Logger receives the debug blocks (Config.DebugLogging or
	// DEBUG_TRAINING=1). Nil means slog.Default().
	Logger *slog.Logger
}

// Pipeline is NeMo's FlowMatchingPipeline: it samples σ, noises the
// latents, asks the adapter to run the model, and computes the weighted
// flow-matching loss, its metrics and (fmtrain's training contract) the
// loss gradient with respect to the model's outputs.
//
// A Pipeline is used by one goroutine at a time (its RNG is stateful).
type Pipeline struct {
	cfg     Config
	adapter ModelAdapter
	rng     RNG
	log     *slog.Logger
	debug   bool
	bsmntw  []float32 // built only for use_loss_weighting with bsmntw, as in NeMo

	// onPrepared, when set (by tests), sees the adapter's context and a
	// copy of the prepared inputs before Forward may change them.
	onPrepared func(*Context, Inputs)
}

// New validates cfg and builds a pipeline around adapter. cfg.AdapterType
// and cfg.AdapterKwargs are not consulted (see CreatePipeline).
func New(cfg Config, adapter ModelAdapter, opts Options) (*Pipeline, error) {
	if adapter == nil {
		return nil, errors.New("flow: New: nil adapter")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, adapter: adapter, rng: opts.RNG, log: opts.Logger}
	if p.rng == nil {
		p.rng = NewRNG(0, 0)
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.debug = cfg.DebugLogging || os.Getenv("DEBUG_TRAINING") == "1"
	if cfg.UseLossWeighting && cfg.LossWeightingScheme == WeightingBSMNTW {
		p.bsmntw = BSMNTWWeights(cfg.NumTrainTimesteps)
	}
	return p, nil
}

// CreatePipeline is NeMo's create_pipeline: the adapter named by
// cfg.AdapterType built from cfg.AdapterKwargs, inside a pipeline.
func CreatePipeline(cfg Config, opts Options) (*Pipeline, error) {
	name := cfg.AdapterType
	if name == "" {
		name = "simple"
	}
	a, err := CreateAdapter(name, cfg.AdapterKwargs)
	if err != nil {
		return nil, err
	}
	return New(cfg, a, opts)
}

// Config returns the pipeline's configuration.
func (p *Pipeline) Config() Config { return p.cfg }

// Adapter returns the pipeline's adapter.
func (p *Pipeline) Adapter() ModelAdapter { return p.adapter }

// RNG returns the pipeline's random source (to checkpoint it).
func (p *Pipeline) RNG() RNG { return p.rng }

// SampleTimesteps draws σ and t = σ·T for a batch of B (NeMo's
// sample_timesteps): float32 values and the method actually used
// ("uniform" when the whole-batch mix decision picked uniform).
func (p *Pipeline) SampleTimesteps(B int) (sigma, timesteps []float32, method string) {
	return sampleTimesteps(&p.cfg, p.rng, B)
}

// Task types.
const (
	TaskT2V = "t2v"
	TaskI2V = "i2v"
)

// DetermineTaskType is NeMo's determine_task_type: "video" draws once
// (Python random.random, even when i2v_prob is 0) and is "i2v" with
// probability i2v_prob; anything else is "t2v" without a draw.
func DetermineTaskType(rng RNG, dataType string, i2vProb float64) string {
	if dataType == "video" && rng.Random() < i2vProb {
		return TaskI2V
	}
	return TaskT2V
}

// StepOptions are step()'s keyword arguments.
type StepOptions struct {
	DType          DType // compute dtype: Float32 or BFloat16 (Float16 also works)
	GlobalStep     int   // selects the debug log cadence
	CollectMetrics bool
	CheckLoss      bool // fail on NaN or average loss > 100
}

// DefaultStepOptions are NeMo's step() defaults: bfloat16, step 0,
// metrics collected, loss checked. (NeMo's recipe passes
// collect_metrics=False and check_loss=performance.check_loss, default False.)
func DefaultStepOptions() StepOptions {
	return StepOptions{DType: BFloat16, CollectMetrics: true, CheckLoss: true}
}

// StepResult is step()'s 4-tuple plus what a trainer without autograd needs.
type StepResult struct {
	WeightedLoss        *Tensor        // per element, unreduced and unmasked
	AverageWeightedLoss float32        // the scalar loss, auxiliary losses included
	LossMask            *Tensor        // batch["loss_mask"] or nil
	Metrics             map[string]any // nil unless CollectMetrics; float64 and string values

	Sigma          []float32 // σ per sample
	Timesteps      []float32 // t = σ·T per sample
	SamplingMethod string
	TaskType       string
	AuxLosses      []AuxLoss
	Loss           *LossOutputs // compute_loss's outputs (before aux losses)
	Prediction     *Tensor      // the adapter's prediction, in the latents' layout
	Target         *Tensor      // ε − X, float32

	// ModelOutputs is the model's raw output tuple and DModelOutputs the
	// gradient of AverageWeightedLoss with respect to each of them, in the
	// model's output layout (nil entries where the loss does not depend on
	// an output). DModelOutputs is nil when the adapter does not implement
	// OutputGrad or replaces the MSE loss.
	ModelOutputs  []*Tensor
	DModelOutputs []*Tensor
}

// LossExplodedError is returned by Step when check_loss finds a NaN or an
// average loss above 100. Its message is NeMo's.
type LossExplodedError struct{ Loss float32 }

func (e *LossExplodedError) Error() string {
	return "flow: Loss exploded: " + pyFloatRepr(float64(e.Loss))
}

// pyFloatRepr formats like Python's repr(float).
func pyFloatRepr(x float64) string {
	switch {
	case math.IsNaN(x):
		return "nan"
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	a := math.Abs(x)
	if a != 0 && (a >= 1e16 || a < 1e-4) {
		return strconv.FormatFloat(x, 'e', -1, 64)
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// Step runs one training forward pass (NeMo's step, flow-pipeline.md §8).
func (p *Pipeline) Step(ctx context.Context, model Model, batch Batch, opts StepOptions) (*StepResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("flow: step: %w", err)
	}
	if !opts.DType.IsFloat() {
		return nil, fmt.Errorf("flow: step: compute dtype %v is not a float dtype (use flow.DefaultStepOptions)", opts.DType)
	}
	detailed := opts.GlobalStep%p.cfg.LogInterval == 0
	summary := opts.GlobalStep%p.cfg.SummaryLogInterval == 0

	raw := batch.Tensor("video_latents")
	if raw == nil {
		raw = batch.Tensor("image_latents")
	}
	if raw == nil {
		return nil, errors.New("flow: step: Batch must contain either 'video_latents' or 'image_latents'")
	}
	if raw.Rank() < 2 || !raw.DType.IsFloat() {
		return nil, fmt.Errorf("flow: step: latents %v must be a float tensor [B,C,…]", raw)
	}
	X := raw.To(opts.DType)
	B := X.Shape[0]

	dataType := "video"
	if v, ok := batch["data_type"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return nil, fmt.Errorf("flow: step: data_type is %T, want a string", v)
		}
		dataType = s
	}
	taskType := DetermineTaskType(p.rng, dataType, p.cfg.I2VProb)

	sigma, timesteps, method := p.SampleTimesteps(B)
	noise := p.rng.Randn(X.Numel())
	noisy32 := Interpolate(X.Data, noise, sigma)

	if p.debug {
		p.logBeforeForward(detailed, summary, opts.GlobalStep, method, sigma, timesteps, X.Data, noise, noisy32)
	}
	noisy := FromFloat32(opts.DType, noisy32, X.Shape...)

	fctx := &Context{
		NoisyLatents:   noisy,
		Latents:        X,
		Timesteps:      timesteps,
		Sigma:          sigma,
		TaskType:       taskType,
		DataType:       dataType,
		DType:          opts.DType,
		Batch:          batch,
		CFGDropoutProb: p.cfg.CFGDropoutProb,
		RNG:            p.rng,
	}
	inputs, err := p.adapter.PrepareInputs(fctx)
	if err != nil {
		return nil, fmt.Errorf("flow: step: preparing inputs: %w", err)
	}
	if p.onPrepared != nil {
		p.onPrepared(fctx, maps.Clone(inputs))
	}
	pred, outputs, err := p.adapter.Forward(ctx, model, inputs)
	if err != nil {
		return nil, fmt.Errorf("flow: step: forward: %w", err)
	}

	target := NewTensor(Float32, X.Shape...)
	for i, e := range noise {
		target.Data[i] = float32(e - X.Data[i])
	}
	lo, err := p.ComputeLoss(pred, target, sigma, batch)
	if err != nil {
		return nil, fmt.Errorf("flow: step: %w", err)
	}
	avg := lo.AverageWeightedLoss
	var aux []AuxLoss
	if al, ok := p.adapter.(AuxLosser); ok {
		if aux, err = al.AuxiliaryLosses(inputs); err != nil {
			return nil, fmt.Errorf("flow: step: auxiliary losses: %w", err)
		}
		for _, a := range aux {
			avg = float32(avg + a.Value)
		}
	}
	if opts.CheckLoss && (math.IsNaN(float64(avg)) || avg > 100) {
		p.log.Error("flow: loss exploded", "loss", avg, "step", opts.GlobalStep)
		return nil, &LossExplodedError{Loss: avg}
	}
	if p.debug {
		p.logAfterLoss(detailed, summary, opts.GlobalStep, lo, avg)
	}

	res := &StepResult{
		WeightedLoss:        lo.WeightedLoss,
		AverageWeightedLoss: avg,
		LossMask:            lo.LossMask,
		Sigma:               sigma,
		Timesteps:           timesteps,
		SamplingMethod:      method,
		TaskType:            taskType,
		AuxLosses:           aux,
		Loss:                lo,
		Prediction:          pred,
		Target:              target,
		ModelOutputs:        outputs,
	}
	if opts.CollectMetrics {
		res.Metrics = stepMetrics(avg, lo, sigma, timesteps, noisy, method, taskType, dataType, aux)
	}
	if og, ok := p.adapter.(OutputGrad); ok {
		if _, custom := p.adapter.(LossComputer); !custom {
			dPred, err := p.predictionGrad(pred, target, lo, batch)
			if err != nil {
				return nil, fmt.Errorf("flow: step: loss gradient: %w", err)
			}
			if res.DModelOutputs, err = og.ModelOutputGrad(inputs, outputs, dPred); err != nil {
				return nil, fmt.Errorf("flow: step: output gradient: %w", err)
			}
		}
	}
	return res, nil
}

// predictionGrad is d(average weighted loss)/d(pred) for the MSE loss:
// 2(pred − target)·w_b/N, or 2(pred − target)·w_b·m/Σm with apply_loss_mask.
func (p *Pipeline) predictionGrad(pred, target *Tensor, lo *LossOutputs, batch Batch) (*Tensor, error) {
	d := NewTensor(Float32, pred.Shape...)
	B := len(lo.LossWeight.Data)
	per := pred.Numel() / B
	var m []float32
	denom := float64(pred.Numel())
	if p.cfg.ApplyLossMask && lo.LossMask != nil {
		var err error
		if m, err = broadcastMask(lo.LossMask, pred.Shape); err != nil {
			return nil, err
		}
		denom = 0
		for _, v := range m {
			denom += float64(v)
		}
	}
	for b := range B {
		w := float64(lo.LossWeight.Data[b])
		for i := b * per; i < (b+1)*per; i++ {
			g := 2 * (float64(pred.Data[i]) - float64(target.Data[i])) * w / denom
			if m != nil {
				g *= float64(m[i])
			}
			d.Data[i] = float32(g)
		}
	}
	return d, nil
}

func stepMetrics(avg float32, lo *LossOutputs, sigma, timesteps []float32, noisy *Tensor, method, task, dataType string, aux []AuxLoss) map[string]any {
	noisyMin, noisyMax := minMax32(noisy.Data)
	m := map[string]any{
		"loss":            float64(avg),
		"unweighted_loss": float64(lo.AverageUnweightedLoss),
		"sigma_min":       float64(slices.Min(sigma)),
		"sigma_max":       float64(slices.Max(sigma)),
		"sigma_mean":      float64(mean32(sigma)),
		"weight_min":      float64(slices.Min(lo.LossWeight.Data)),
		"weight_max":      float64(slices.Max(lo.LossWeight.Data)),
		"timestep_min":    float64(slices.Min(timesteps)),
		"timestep_max":    float64(slices.Max(timesteps)),
		"noisy_min":       float64(noisyMin),
		"noisy_max":       float64(noisyMax),
		"sampling_method": method,
		"task_type":       task,
		"data_type":       dataType,
	}
	for _, a := range aux {
		m[a.Name] = float64(a.Value)
	}
	return m
}

// minMax32 is (min, max) in one pass; NaN if any value is NaN, as torch's
// min/max are. (slices.Min and slices.Max take two passes with NaN checks
// per element: a quarter of a step's own cost on large latents.)
func minMax32(x []float32) (lo, hi float32) {
	lo, hi = x[0], x[0]
	nan := false
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
		nan = nan || v != v
	}
	if nan {
		n := float32(math.NaN())
		return n, n
	}
	return lo, hi
}
