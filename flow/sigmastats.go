package flow

import (
	"fmt"
	"math"
	"slices"
)

// DrawSigmas draws n values of σ with the pipeline's own sampler for cfg,
// in calls of batchSize (the whole-batch mix decision is made once per
// call, so the batch size shapes the correlation, not the marginal
// distribution). cfg must be valid.
func DrawSigmas(cfg Config, rng RNG, n, batchSize int) ([]float32, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n <= 0 || batchSize <= 0 {
		return nil, fmt.Errorf("flow: DrawSigmas: count (%d) and batch size (%d) must be positive", n, batchSize)
	}
	out := make([]float32, 0, n)
	for len(out) < n {
		b := min(batchSize, n-len(out))
		s, _, _ := sampleTimesteps(&cfg, rng, b)
		out = append(out, s...)
	}
	return out, nil
}

// QuantileLevels are the probabilities SigmaSummary reports.
var QuantileLevels = []float64{0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99}

// Quantiles are a sample's quantiles at QuantileLevels.
type Quantiles struct {
	P01 float64 `json:"p01"`
	P05 float64 `json:"p05"`
	P25 float64 `json:"p25"`
	P50 float64 `json:"p50"`
	P75 float64 `json:"p75"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Values returns the quantiles in QuantileLevels order.
func (q Quantiles) Values() []float64 {
	return []float64{q.P01, q.P05, q.P25, q.P50, q.P75, q.P95, q.P99}
}

// SigmaSummary describes a sample of σ (what `fmctl sigmas` prints).
type SigmaSummary struct {
	Count          int       `json:"count"`
	Mean           float64   `json:"mean"`
	Std            float64   `json:"std"` // population (ddof 0)
	Min            float64   `json:"min"`
	Max            float64   `json:"max"`
	Quantiles      Quantiles `json:"quantiles"` // NumPy's "linear" interpolation
	MassAtSigmaMin float64   `json:"mass_at_sigma_min"`
	MassAtSigmaMax float64   `json:"mass_at_sigma_max"`
}

// SummarizeSigmas computes the summary of sigmas; the clamp masses are the
// fractions exactly equal to float32(sigmaMin) and float32(sigmaMax).
func SummarizeSigmas(sigmas []float32, sigmaMin, sigmaMax float64) (SigmaSummary, error) {
	if len(sigmas) == 0 {
		return SigmaSummary{}, fmt.Errorf("flow: SummarizeSigmas: no values")
	}
	sorted := make([]float64, len(sigmas))
	lo, hi := float32(sigmaMin), float32(sigmaMax)
	var atLo, atHi int
	for i, v := range sigmas {
		sorted[i] = float64(v)
		if v == lo {
			atLo++
		}
		if v == hi {
			atHi++
		}
	}
	slices.Sort(sorted)
	mean, std := meanStd(sigmas)
	q := make([]float64, len(QuantileLevels))
	for i, p := range QuantileLevels {
		q[i] = quantileLinear(sorted, p)
	}
	n := float64(len(sigmas))
	return SigmaSummary{
		Count: len(sigmas), Mean: mean, Std: std,
		Min: sorted[0], Max: sorted[len(sorted)-1],
		Quantiles:      Quantiles{q[0], q[1], q[2], q[3], q[4], q[5], q[6]},
		MassAtSigmaMin: float64(atLo) / n,
		MassAtSigmaMax: float64(atHi) / n,
	}, nil
}

// quantileLinear is NumPy's default ("linear") quantile of sorted data.
func quantileLinear(sorted []float64, p float64) float64 {
	h := p * float64(len(sorted)-1)
	i := int(math.Floor(h))
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (h-float64(i))*(sorted[i+1]-sorted[i])
}

// SamplerDescription is a one-line description of what cfg's sampler draws,
// naming only the parameters that matter for it.
func (c *Config) SamplerDescription() string {
	clamp := fmt.Sprintf("clamp [%g, %g], T=%d", c.SigmaMin, c.SigmaMax, c.NumTrainTimesteps)
	switch {
	case !c.UseSigmaNoise:
		return "uniform σ, no shift (use_sigma_noise=false), " + clamp
	case c.TimestepSampling == SamplingBeta:
		return fmt.Sprintf("beta(α=%g, β=%g), no shift, %s", c.BetaAlpha, c.BetaBeta, clamp)
	}
	var u string
	switch c.TimestepSampling {
	case SamplingLogitNormal:
		u = fmt.Sprintf("logit_normal(mean=%g, std=%g)", c.LogitMean, c.LogitStd)
	case SamplingLognorm, SamplingMix:
		u = c.TimestepSampling + " (sigmoid of N(0,1))"
	case SamplingMode:
		u = "mode (scale 1.29)"
	default:
		u = c.TimestepSampling
	}
	mix := ""
	if c.TimestepSampling != SamplingUniform && c.MixUniformRatio > 0 {
		mix = fmt.Sprintf(", whole batch uniform with p=%g", c.MixUniformRatio)
	}
	return fmt.Sprintf("%s%s, flow_shift %g, %s", u, mix, c.FlowShift, clamp)
}
