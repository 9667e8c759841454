package optim

import (
	"fmt"
	"math"

	"github.com/fmtrain/fmtrain/jobspec"
)

// Schedule gives the learning rate of each optimizer step, numbered from 0
// (the first update uses LR(0)), which is how NeMo's scheduler is driven:
// built with step(0), then step(1) after every optimizer step.
type Schedule interface {
	LR(step int) float64
}

// Constant is a fixed learning rate (NeMo without an lr_scheduler section).
type Constant float64

// LR returns the constant.
func (c Constant) LR(int) float64 { return float64(c) }

// ParamSchedule is NeMo's OptimizerParamScheduler for the learning rate:
// linear warm-up from InitLR to MaxLR over WarmupSteps, then constant,
// linear or cosine decay to MinLR at DecaySteps, MinLR after.
type ParamSchedule struct {
	InitLR, MaxLR, MinLR    float64
	WarmupSteps, DecaySteps int
	Style                   string // constant, linear, cosine
}

// LR follows OptimizerParamScheduler.get_lr.
func (s ParamSchedule) LR(step int) float64 {
	if s.WarmupSteps > 0 && step <= s.WarmupSteps {
		return s.InitLR + (s.MaxLR-s.InitLR)*float64(step)/float64(s.WarmupSteps)
	}
	if s.Style == "constant" {
		return s.MaxLR
	}
	if step > s.DecaySteps {
		return s.MinLR
	}
	ratio := float64(step-s.WarmupSteps) / float64(s.DecaySteps-s.WarmupSteps)
	var coeff float64
	switch s.Style {
	case "linear":
		coeff = 1 - ratio
	default: // cosine; NewSchedule admits nothing else
		coeff = 0.5 * (math.Cos(math.Pi*ratio) + 1)
	}
	return s.MinLR + coeff*(s.MaxLR-s.MinLR)
}

// NewSchedule builds the schedule of a job the way NeMo's diffusion recipe
// (build_lr_scheduler) does: with no section the lr is constant; otherwise
// unset fields default to warm-up min(1000, total/10), decay over the total
// steps, init_lr 0.1·lr, min_lr 0.01·lr; no warm-up means init_lr = lr; a
// warm-up fraction in (0,1) is a share of the total; a warm-up not shorter
// than the decay is cut to decay−1.
func NewSchedule(cfg *jobspec.LRScheduler, lr float64, totalSteps int) (Schedule, error) {
	if cfg == nil {
		return Constant(lr), nil
	}
	if totalSteps <= 0 {
		return nil, fmt.Errorf("optim: lr_scheduler needs the run's total steps (%d) to be > 0", totalSteps)
	}
	s := ParamSchedule{
		InitLR: lr * 0.1, MaxLR: lr, MinLR: lr * 0.01,
		WarmupSteps: min(1000, totalSteps/10), DecaySteps: totalSteps,
		Style: cfg.LRDecayStyle,
	}
	if s.Style == "" {
		s.Style = jobspec.DefaultLRDecayStyle
	}
	if w := cfg.LRWarmupSteps; w != nil {
		if *w > 0 && *w < 1 {
			s.WarmupSteps = int(*w * float64(totalSteps))
		} else {
			s.WarmupSteps = int(*w)
		}
	}
	if cfg.LRDecaySteps != nil {
		s.DecaySteps = *cfg.LRDecaySteps
	}
	if cfg.InitLR != nil {
		s.InitLR = *cfg.InitLR
	}
	if cfg.MinLR != nil {
		s.MinLR = *cfg.MinLR
	}
	if s.WarmupSteps == 0 {
		s.InitLR = s.MaxLR
	}
	if s.WarmupSteps >= s.DecaySteps {
		s.WarmupSteps = max(0, s.DecaySteps-1)
	}
	switch {
	case s.Style != "constant" && s.Style != "linear" && s.Style != "cosine":
		return nil, fmt.Errorf("optim: lr_decay_style %q is not constant, linear or cosine", s.Style)
	case s.DecaySteps <= 0:
		return nil, fmt.Errorf("optim: lr_decay_steps (%d) must be > 0", s.DecaySteps)
	case s.MinLR < 0 || s.MinLR > s.MaxLR || s.InitLR > s.MaxLR:
		return nil, fmt.Errorf("optim: need 0 <= min_lr (%g) <= lr (%g) and init_lr (%g) <= lr", s.MinLR, s.MaxLR, s.InitLR)
	}
	return s, nil
}
