package flow

import "math"

// modeScale is NeMo's hard-coded mode_scale of the "mode" sampler.
const modeScale = 1.29

// uMin is the floor NeMo puts under u before the flow shift (max(u, 1e-5)).
const uMin = float32(1e-5)

// sampleTimesteps is NeMo's sample_timesteps (flow-pipeline.md §3.1) on
// an unvalidated config, so the reference vectors' unknown-method case can
// be replayed. It returns σ and t = σ·T as float32 and the method name.
func sampleTimesteps(c *Config, rng RNG, B int) (sigma, timesteps []float32, method string) {
	switch {
	case !c.UseSigmaNoise:
		sigma = rng.Rand(B)
		method = SamplingUniformNoShift
	case c.TimestepSampling == SamplingBeta:
		sigma = rng.Beta(c.BetaAlpha, c.BetaBeta, B)
		method = SamplingBeta
	default:
		useUniform := c.TimestepSampling == SamplingUniform
		if !useUniform && c.MixUniformRatio > 0 {
			// One draw decides for the whole batch; compared in float64.
			useUniform = float64(rng.Rand(1)[0]) < c.MixUniformRatio
		}
		var u []float32
		if useUniform {
			u = rng.Rand(B)
			method = SamplingUniform
		} else {
			u = sampleFromDistribution(c, rng, B)
			method = c.TimestepSampling
		}
		s := float32(c.FlowShift)
		sigma = u
		for i, v := range u {
			sigma[i] = FlowShift(v, s)
		}
	}
	lo, hi := float32(c.SigmaMin), float32(c.SigmaMax)
	T := float32(c.NumTrainTimesteps)
	timesteps = make([]float32, B)
	for i, v := range sigma {
		v = min(max(v, lo), hi) // torch.clamp: hi wins when lo > hi
		sigma[i] = v
		timesteps[i] = float32(v * T)
	}
	return sigma, timesteps, method
}

// sampleFromDistribution draws u in [0,1] for the non-uniform methods
// (§3.2). Unknown names fall back to uniform, as in NeMo.
func sampleFromDistribution(c *Config, rng RNG, B int) []float32 {
	switch c.TimestepSampling {
	case SamplingLogitNormal:
		return sigmoidInPlace(rng.Normal(c.LogitMean, c.LogitStd, B))
	case SamplingLognorm, SamplingMix:
		// Both ignore logit_mean/logit_std (NeMo calls normal(0, 1)).
		return sigmoidInPlace(rng.Normal(0, 1, B))
	case SamplingMode:
		u := rng.Rand(B)
		for i, v := range u {
			u[i] = ModeTransform(v)
		}
		return u
	}
	return rng.Rand(B)
}

func sigmoidInPlace(z []float32) []float32 {
	for i, v := range z {
		z[i] = float32(1 / (1 + math.Exp(-float64(v))))
	}
	return z
}

// FlowShift maps u to σ = s/(s + 1/u − 1) in torch's float32 evaluation
// order, bit for bit: u′ = max(u, 1e-5); r = fl(1/u′); b = fl(r − 1);
// c = fl(s + b); σ = fl(fl(1/c)·s). (torch evaluates scalar/tensor as a
// reciprocal times the scalar.) Every intermediate is an explicit float32
// conversion so the compiler cannot fuse.
func FlowShift(u, s float32) float32 {
	u = max(u, uMin)
	r := float32(1 / u)
	b := float32(r - 1)
	c := float32(s + b)
	return float32(float32(1/c) * s)
}

// ModeTransform is the "mode" sampler's map of v ~ U[0,1) (mode_scale 1.29),
// in torch's float32 order: u = (1 − v) − 1.29·(cos²(π·v/2) − 1 + v),
// clamped to [0,1]. cos is evaluated in float64 and rounded (within 1 ulp of
// torch).
func ModeTransform(v float32) float32 {
	a := float32(v * float32(math.Pi))
	a = float32(a / 2)
	c := float32(math.Cos(float64(a)))
	c2 := float32(c * c)
	d := float32(c2 - 1)
	e := float32(d + v)
	f := float32(float32(modeScale) * e)
	g := float32(1 - v)
	u := float32(g - f)
	return min(max(u, 0), 1)
}
