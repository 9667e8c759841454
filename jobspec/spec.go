// Package jobspec is the training job's YAML: what a user submits with
// `fmctl submit`, what `fmctl train` runs, and what every worker of a job
// reads. Parse is strict: an unknown key anywhere is rejected with its dotted
// path, and every invalid value is rejected with an error that names the
// field, the value and the bound it broke, so a bad job fails at submission
// and not an hour into training.
//
// The sections follow NeMo AutoModel's diffusion recipe where NeMo has an
// equivalent (flow_matching, optimizer, lr_scheduler, clip_grad_norm,
// step_scheduler, checkpoint) so a NeMo user recognises every key;
// docs/job-spec.md documents each field.
//
// A Spec is a plain value: safe to read from many goroutines, not to mutate
// concurrently.
package jobspec

import (
	"github.com/fmtrain/fmtrain/flow"
	"github.com/fmtrain/fmtrain/model"
)

// Spec is one training job.
type Spec struct {
	// Name is a human label (the job id is assigned at submission).
	Name string `yaml:"name"`
	// Seed seeds model initialisation, the data shuffle and the flow RNG
	// (each rank's flow RNG is seeded with seed and its rank, as NeMo does).
	Seed uint64 `yaml:"seed"`
	// Device is where workers run the model: cpu, cuda or auto.
	Device string `yaml:"device"`
	// MinWorkers is the fewest workers the job trains with; MaxWorkers the
	// most (elastic in between).
	MinWorkers int `yaml:"min_workers"`
	MaxWorkers int `yaml:"max_workers"`

	Model         Model         `yaml:"model"`
	FlowMatching  flow.Config   `yaml:"flow_matching"`
	Data          Data          `yaml:"data"`
	Optimizer     Optimizer     `yaml:"optimizer"`
	LRScheduler   *LRScheduler  `yaml:"lr_scheduler"`
	ClipGradNorm  ClipGradNorm  `yaml:"clip_grad_norm"`
	EMA           EMA           `yaml:"ema"`
	StepScheduler StepScheduler `yaml:"step_scheduler"`
	Checkpoint    Checkpoint    `yaml:"checkpoint"`
	Sample        Sample        `yaml:"sample"`
}

// Model selects the velocity model: an FM-DiT built from the inline config
// fields, or the weights and config of an existing checkpoint to fine-tune.
type Model struct {
	// FromCheckpoint is a checkpoint directory or weights file whose config
	// and weights the job starts from. Exclusive with the config fields.
	FromCheckpoint string `yaml:"from_checkpoint"`
	// DiT is the FM-DiT configuration (keys inline under model:).
	DiT model.Config `yaml:",inline"`
}

// Data points at the dataset.
type Data struct {
	// Manifest is the path of the dataset's manifest.json (docs/data.md).
	Manifest string `yaml:"manifest"`
	// Shuffle reshuffles the sample order every epoch from the job seed.
	Shuffle bool `yaml:"shuffle"`
	// TextDropoutProb is the probability that a sample's text embeddings
	// (and mask) are replaced by zeros while training: the unconditional
	// input classifier-free guidance samples with. fmtrain applies it when
	// loading, so it works for every adapter; NeMo's simple and hunyuan
	// adapters drop nothing, so set 0 to reproduce NeMo's numbers exactly.
	// (flow_matching.cfg_dropout_prob still acts inside the Flux and Qwen
	// adapters as in NeMo.)
	TextDropoutProb float64 `yaml:"text_dropout_prob"`
}

// Optimizer is AdamW with PyTorch's semantics (torch.optim.AdamW).
type Optimizer struct {
	// Name is the optimizer; only "adamw" exists.
	Name string `yaml:"name"`
	// LR is the peak learning rate (max_lr of the schedule).
	LR          float64   `yaml:"lr"`
	Betas       []float64 `yaml:"betas"`
	Eps         float64   `yaml:"eps"`
	WeightDecay float64   `yaml:"weight_decay"`
}

// LRScheduler is NeMo's OptimizerParamScheduler as its diffusion recipe
// builds it. A nil section means a constant learning rate, as in NeMo.
// Pointer fields that are nil take NeMo's run-time defaults, resolved by
// optim.NewSchedule from the optimizer's lr and the run's total steps.
type LRScheduler struct {
	// LRDecayStyle is constant, linear or cosine.
	LRDecayStyle string `yaml:"lr_decay_style"`
	// LRWarmupSteps is a step count, or a fraction of the total steps when
	// strictly between 0 and 1. Default min(1000, total/10).
	LRWarmupSteps *float64 `yaml:"lr_warmup_steps"`
	// LRDecaySteps is where the decay ends. Default: the total steps.
	LRDecaySteps *int `yaml:"lr_decay_steps"`
	// InitLR is the warm-up's starting lr. Default 0.1·lr (lr when there is
	// no warm-up).
	InitLR *float64 `yaml:"init_lr"`
	// MinLR is the lr the decay ends at. Default 0.01·lr.
	MinLR *float64 `yaml:"min_lr"`
}

// ClipGradNorm clips the global gradient norm before each optimizer step.
type ClipGradNorm struct {
	// MaxNorm is the largest global L2 norm; 0 disables clipping.
	MaxNorm float64 `yaml:"max_norm"`
}

// EMA keeps an exponential moving average of the weights (NeMo has none).
type EMA struct {
	// Decay of the average, in [0, 1); 0 disables EMA.
	Decay float64 `yaml:"decay"`
	// StartStep is the optimizer step at which averaging starts (the
	// average is a copy of the weights until then).
	StartStep int `yaml:"start_step"`
}

// StepScheduler is NeMo's step_scheduler: batch sizes, length and cadence.
type StepScheduler struct {
	// GlobalBatchSize is the samples per optimizer step over all workers;
	// gradient accumulation = global / (local · world size).
	GlobalBatchSize int `yaml:"global_batch_size"`
	// LocalBatchSize is one worker's micro-batch.
	LocalBatchSize int `yaml:"local_batch_size"`
	// MaxSteps stops training after this many optimizer steps (0: no limit).
	MaxSteps int `yaml:"max_steps"`
	// NumEpochs stops training after this many passes over the data
	// (0: no limit). At least one of max_steps and num_epochs is set.
	NumEpochs int `yaml:"num_epochs"`
	// CkptEverySteps writes a checkpoint every this many steps (0: only at
	// the end).
	CkptEverySteps int `yaml:"ckpt_every_steps"`
	// LogEverySteps publishes metrics every this many steps.
	LogEverySteps int `yaml:"log_every_steps"`
}

// Checkpoint says where checkpoints go and where training resumes from.
type Checkpoint struct {
	// Enabled turns checkpoint writing on.
	Enabled bool `yaml:"enabled"`
	// CheckpointDir holds step_<N> checkpoints.
	CheckpointDir string `yaml:"checkpoint_dir"`
	// RestoreFrom is "" (fresh start), "latest" (the newest complete
	// checkpoint in checkpoint_dir, fresh if none) or a checkpoint path.
	RestoreFrom string `yaml:"restore_from"`
	// KeepLast is how many checkpoints to keep (0: keep all).
	KeepLast int `yaml:"keep_last"`
}

// Sample configures sampling from the trained model (fmctl sample and the
// samples fmctl local writes at the end).
type Sample struct {
	// Prompts is a safetensors file of text embeddings to sample for
	// (text_embeddings [n,S,Dt], text_mask [n,S], captions in metadata);
	// data synth writes one. Empty: no samples.
	Prompts string `yaml:"prompts"`
	// NumSteps is the number of Euler steps.
	NumSteps int `yaml:"num_steps"`
	// GuidanceScale is the classifier-free guidance scale (1: no guidance).
	GuidanceScale float64 `yaml:"guidance_scale"`
	// PerPrompt is how many samples each prompt gets (one grid row each).
	PerPrompt int `yaml:"per_prompt"`
}

// Defaults. Each is pinned by TestDefaults.
const (
	DefaultName            = "fmtrain-job"
	DefaultSeed            = 42
	DefaultDevice          = "auto"
	DefaultMinWorkers      = 1
	DefaultMaxWorkers      = 1
	DefaultShuffle         = true
	DefaultTextDropout     = 0.1
	DefaultOptimizer       = "adamw"
	DefaultLR              = 1e-4
	DefaultBeta1           = 0.9
	DefaultBeta2           = 0.999
	DefaultEps             = 1e-8
	DefaultWeightDecay     = 0.01
	DefaultMaxNorm         = 1.0
	DefaultEMADecay        = 0.0
	DefaultGlobalBatch     = 32
	DefaultLocalBatch      = 8
	DefaultLogEverySteps   = 10
	DefaultCkptEnabled     = true
	DefaultCheckpointDir   = "checkpoints"
	DefaultKeepLast        = 3
	DefaultSampleSteps     = 30
	DefaultGuidanceScale   = 4.0
	DefaultSamplePerPrompt = 4
	// Decay style used when an lr_scheduler section omits lr_decay_style
	// (NeMo's diffusion recipe default).
	DefaultLRDecayStyle = "cosine"
)

// Default returns a Spec with every default filled in and no model, data or
// length: the starting point Parse decodes onto.
func Default() *Spec {
	return &Spec{
		Name:         DefaultName,
		Seed:         DefaultSeed,
		Device:       DefaultDevice,
		MinWorkers:   DefaultMinWorkers,
		MaxWorkers:   DefaultMaxWorkers,
		FlowMatching: flow.DefaultConfig(),
		Data:         Data{Shuffle: DefaultShuffle, TextDropoutProb: DefaultTextDropout},
		Optimizer: Optimizer{
			Name:        DefaultOptimizer,
			LR:          DefaultLR,
			Betas:       []float64{DefaultBeta1, DefaultBeta2},
			Eps:         DefaultEps,
			WeightDecay: DefaultWeightDecay,
		},
		ClipGradNorm: ClipGradNorm{MaxNorm: DefaultMaxNorm},
		EMA:          EMA{Decay: DefaultEMADecay},
		StepScheduler: StepScheduler{
			GlobalBatchSize: DefaultGlobalBatch,
			LocalBatchSize:  DefaultLocalBatch,
			LogEverySteps:   DefaultLogEverySteps,
		},
		Checkpoint: Checkpoint{
			Enabled:       DefaultCkptEnabled,
			CheckpointDir: DefaultCheckpointDir,
			KeepLast:      DefaultKeepLast,
		},
		Sample: Sample{
			NumSteps:      DefaultSampleSteps,
			GuidanceScale: DefaultGuidanceScale,
			PerPrompt:     DefaultSamplePerPrompt,
		},
	}
}
