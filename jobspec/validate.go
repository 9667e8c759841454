package jobspec

import (
	"errors"
	"fmt"
	"github.com/fmtrain/fmtrain/model"
	"math"
)

// Devices a job may ask for.
var devices = []string{"auto", "cpu", "cuda"}

// LR decay styles optim implements (NeMo's names).
var lrDecayStyles = []string{"constant", "linear", "cosine"}

// Validate checks every field and returns all problems joined, each naming
// the field, its value and the bound it broke.
func (s *Spec) Validate() error {
	var v validator
	if !oneOf(s.Device, devices) {
		v.add("device (%q) must be one of %v", s.Device, devices)
	}
	v.positive("min_workers", s.MinWorkers)
	v.positive("max_workers", s.MaxWorkers)
	if s.MinWorkers > s.MaxWorkers {
		v.add("min_workers (%d) cannot exceed max_workers (%d)", s.MinWorkers, s.MaxWorkers)
	}
	s.validateModel(&v)
	s.validateFlow(&v)
	if s.Data.Manifest == "" {
		v.add("data.manifest is required (the path of the dataset's manifest.json)")
	}
	v.probability("data.text_dropout_prob", s.Data.TextDropoutProb)
	s.validateOptim(&v)
	s.validateSteps(&v)
	if s.Checkpoint.Enabled && s.Checkpoint.CheckpointDir == "" {
		v.add("checkpoint.checkpoint_dir is required when checkpoint.enabled is true")
	}
	if s.Checkpoint.RestoreFrom == "latest" && s.Checkpoint.CheckpointDir == "" {
		v.add(`checkpoint.restore_from ("latest") needs checkpoint.checkpoint_dir`)
	}
	v.nonNegative("checkpoint.keep_last", s.Checkpoint.KeepLast)
	v.positive("sample.num_steps", s.Sample.NumSteps)
	v.positive("sample.per_prompt", s.Sample.PerPrompt)
	if !(s.Sample.GuidanceScale >= 0) || math.IsInf(s.Sample.GuidanceScale, 0) {
		v.add("sample.guidance_scale (%g) must be a finite number >= 0", s.Sample.GuidanceScale)
	}
	return v.err()
}

func (s *Spec) validateModel(v *validator) {
	m := s.Model
	if m.FromCheckpoint != "" {
		if m.DiT != (model.Config{}) {
			v.add("model.from_checkpoint (%q) takes the model config from the checkpoint; remove the other model keys", m.FromCheckpoint)
		}
		return
	}
	if m.DiT == (model.Config{}) {
		v.add("model needs either from_checkpoint or an FM-DiT config (in_channels, out_channels, patch_size, hidden_size, depth, num_heads, mlp_ratio, text_dim)")
		return
	}
	if err := m.DiT.Validate(); err != nil {
		v.errs = append(v.errs, err)
	}
}

func (s *Spec) validateFlow(v *validator) {
	if err := s.FlowMatching.Validate(); err != nil {
		v.errs = append(v.errs, fmt.Errorf("flow_matching: %w", err))
	}
}

func (s *Spec) validateOptim(v *validator) {
	o := s.Optimizer
	if o.Name != "adamw" {
		v.add("optimizer.name (%q) must be \"adamw\"", o.Name)
	}
	if !(o.LR > 0) || math.IsInf(o.LR, 0) {
		v.add("optimizer.lr (%g) must be a finite number > 0", o.LR)
	}
	if len(o.Betas) != 2 {
		v.add("optimizer.betas (%v) must have two values [beta1, beta2]", o.Betas)
	} else {
		for i, b := range o.Betas {
			if !(b >= 0 && b < 1) {
				v.add("optimizer.betas[%d] (%g) must be in [0, 1)", i, b)
			}
		}
	}
	if !(o.Eps > 0) || math.IsInf(o.Eps, 0) {
		v.add("optimizer.eps (%g) must be a finite number > 0", o.Eps)
	}
	if !(o.WeightDecay >= 0) || math.IsInf(o.WeightDecay, 0) {
		v.add("optimizer.weight_decay (%g) must be a finite number >= 0", o.WeightDecay)
	}
	if l := s.LRScheduler; l != nil {
		if !oneOf(l.LRDecayStyle, lrDecayStyles) {
			v.add("lr_scheduler.lr_decay_style (%q) must be one of %v", l.LRDecayStyle, lrDecayStyles)
		}
		if w := l.LRWarmupSteps; w != nil {
			if !(*w >= 0) || (*w >= 1 && *w != math.Trunc(*w)) || math.IsInf(*w, 0) {
				v.add("lr_scheduler.lr_warmup_steps (%g) must be a whole number of steps >= 0 or a fraction in (0, 1)", *w)
			}
		}
		if d := l.LRDecaySteps; d != nil && *d <= 0 {
			v.add("lr_scheduler.lr_decay_steps (%d) must be > 0", *d)
		}
		if m := l.MinLR; m != nil {
			if !(*m >= 0) {
				v.add("lr_scheduler.min_lr (%g) must be >= 0", *m)
			} else if *m > o.LR {
				v.add("lr_scheduler.min_lr (%g) cannot exceed optimizer.lr (%g)", *m, o.LR)
			}
		}
		if i := l.InitLR; i != nil {
			if !(*i >= 0) {
				v.add("lr_scheduler.init_lr (%g) must be >= 0", *i)
			} else if *i > o.LR {
				v.add("lr_scheduler.init_lr (%g) cannot exceed optimizer.lr (%g)", *i, o.LR)
			}
		}
	}
	if !(s.ClipGradNorm.MaxNorm >= 0) || math.IsInf(s.ClipGradNorm.MaxNorm, 0) {
		v.add("clip_grad_norm.max_norm (%g) must be a finite number >= 0 (0 disables clipping)", s.ClipGradNorm.MaxNorm)
	}
	if !(s.EMA.Decay >= 0 && s.EMA.Decay < 1) {
		v.add("ema.decay (%g) must be in [0, 1) (0 disables EMA)", s.EMA.Decay)
	}
	v.nonNegative("ema.start_step", s.EMA.StartStep)
}

func (s *Spec) validateSteps(v *validator) {
	st := s.StepScheduler
	v.positive("step_scheduler.global_batch_size", st.GlobalBatchSize)
	v.positive("step_scheduler.local_batch_size", st.LocalBatchSize)
	v.nonNegative("step_scheduler.max_steps", st.MaxSteps)
	v.nonNegative("step_scheduler.num_epochs", st.NumEpochs)
	v.nonNegative("step_scheduler.ckpt_every_steps", st.CkptEverySteps)
	v.positive("step_scheduler.log_every_steps", st.LogEverySteps)
	if st.MaxSteps == 0 && st.NumEpochs == 0 {
		v.add("step_scheduler needs max_steps or num_epochs (both are 0)")
	}
	if st.GlobalBatchSize <= 0 || st.LocalBatchSize <= 0 {
		return
	}
	if st.GlobalBatchSize%st.LocalBatchSize != 0 {
		v.add("step_scheduler.global_batch_size (%d) must be a multiple of local_batch_size (%d)",
			st.GlobalBatchSize, st.LocalBatchSize)
		return
	}
	micro := st.GlobalBatchSize / st.LocalBatchSize
	if s.MaxWorkers > micro {
		v.add("max_workers (%d) cannot exceed global_batch_size / local_batch_size (%d / %d = %d): every worker needs a micro-batch",
			s.MaxWorkers, st.GlobalBatchSize, st.LocalBatchSize, micro)
	}
	if s.MinWorkers > 0 && micro%s.MinWorkers != 0 {
		v.add("min_workers (%d) must divide global_batch_size / local_batch_size (%d) so the global batch stays exact",
			s.MinWorkers, micro)
	}
}

// Accumulation is NeMo's gradient accumulation for a world size:
// global / (local · world). It fails when that is not a whole number, since
// the global batch would then change with the world size.
func (st StepScheduler) Accumulation(world int) (int, error) {
	if world <= 0 {
		return 0, fmt.Errorf("jobspec: world size (%d) must be > 0", world)
	}
	per := st.LocalBatchSize * world
	if per <= 0 || st.GlobalBatchSize%per != 0 {
		return 0, fmt.Errorf("jobspec: global_batch_size (%d) is not a multiple of local_batch_size (%d) × world size (%d)",
			st.GlobalBatchSize, st.LocalBatchSize, world)
	}
	return st.GlobalBatchSize / per, nil
}

// WorldSizeFor is the largest world size w ≤ min(available, max_workers)
// that keeps the global batch exact (Accumulation(w) succeeds), or 0 when
// fewer than min_workers are available.
func (s *Spec) WorldSizeFor(available int) int {
	w := min(available, s.MaxWorkers)
	for ; w >= s.MinWorkers && w > 0; w-- {
		if _, err := s.StepScheduler.Accumulation(w); err == nil {
			return w
		}
	}
	return 0
}

// validator collects problems so one Parse reports all of them.
type validator struct{ errs []error }

func (v *validator) add(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) positive(field string, x int) {
	if x <= 0 {
		v.add("%s (%d) must be > 0", field, x)
	}
}

func (v *validator) nonNegative(field string, x int) {
	if x < 0 {
		v.add("%s (%d) must be >= 0", field, x)
	}
}

func (v *validator) probability(field string, x float64) {
	if !(x >= 0 && x <= 1) {
		v.add("%s (%g) must be in [0, 1]", field, x)
	}
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("jobspec: invalid spec: %w", errors.Join(v.errs...))
}

func oneOf(s string, allowed []string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}
