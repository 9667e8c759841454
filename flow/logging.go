package flow

import (
	"math"
	"slices"
)

// Debug logging at NeMo's cadence (flow-pipeline.md §9): nothing unless
// Config.DebugLogging or DEBUG_TRAINING=1; then a detailed block when
// global_step % log_interval == 0, else one summary line before the forward
// and one after when global_step % summary_log_interval == 0.

func (p *Pipeline) logBeforeForward(detailed, summary bool, step int, method string, sigma, timesteps, clean, noise, noisy []float32) {
	switch {
	case detailed:
		sMean, sStd := meanStd(sigma)
		cMin, cMax := minMax32(clean)
		nMin, nMax := minMax32(noise)
		xMin, xMax := minMax32(noisy)
		p.log.Info("flow: forward (detailed)",
			"step", step, "method", method, "shift", p.cfg.FlowShift, "batch", len(sigma),
			"sigma_min", slices.Min(sigma), "sigma_max", slices.Max(sigma), "sigma_mean", sMean, "sigma_std", sStd,
			"timestep_min", slices.Min(timesteps), "timestep_max", slices.Max(timesteps),
			"clean_min", cMin, "clean_max", cMax, "noise_min", nMin, "noise_max", nMax,
			"noisy_min", xMin, "noisy_max", xMax)
		maxAbs := func(lo, hi float32) float64 { return math.Max(math.Abs(float64(lo)), math.Abs(float64(hi))) }
		if bound := 1.5 * math.Max(maxAbs(cMin, cMax), maxAbs(nMin, nMax)); maxAbs(xMin, xMax) > bound {
			p.log.Warn("flow: noisy latents exceed 1.5x the larger of clean and noise", "step", step,
				"noisy_max_abs", maxAbs(xMin, xMax), "bound", bound)
		}
	case summary:
		p.log.Info("flow: forward", "step", step, "method", method,
			"sigma_min", slices.Min(sigma), "sigma_max", slices.Max(sigma),
			"timestep_min", slices.Min(timesteps), "timestep_max", slices.Max(timesteps))
	}
}

func (p *Pipeline) logAfterLoss(detailed, summary bool, step int, lo *LossOutputs, avg float32) {
	switch {
	case detailed:
		p.log.Info("flow: loss (detailed)", "step", step,
			// NeMo prints this formula even for bsmntw.
			"formula", "1 + shift·σ", "weighting", p.cfg.UseLossWeighting, "scheme", p.cfg.LossWeightingScheme,
			"weight_min", slices.Min(lo.LossWeight.Data), "weight_max", slices.Max(lo.LossWeight.Data),
			"unweighted_loss", lo.AverageUnweightedLoss, "weighted_loss", avg)
	case summary:
		p.log.Info("flow: loss", "step", step, "loss", avg, "unweighted_loss", lo.AverageUnweightedLoss)
	}
}

// meanStd is the mean and population standard deviation.
func meanStd(x []float32) (mean, std float64) {
	for _, v := range x {
		mean += float64(v)
	}
	mean /= float64(len(x))
	for _, v := range x {
		d := float64(v) - mean
		std += d * d
	}
	return mean, math.Sqrt(std / float64(len(x)))
}
