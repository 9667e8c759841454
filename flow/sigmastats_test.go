package flow

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// analyticDist is a σ distribution known through the CDF of the unclamped
// σ on [0,1]; clamping to [lo, hi] piles the outer mass on the bounds.
type analyticDist struct {
	cdf    func(x float64) float64 // unclamped σ, continuous on [0,1]
	lo, hi float64
}

// shiftedCDF turns the CDF of u into that of σ = s·u/(1+(s−1)u), whose
// inverse is u = x/(s − (s−1)x).
func shiftedCDF(uCDF func(float64) float64, s float64) func(float64) float64 {
	return func(x float64) float64 { return uCDF(x / (s - (s-1)*x)) }
}

// clampedCDF is the clamped distribution's CDF: 0 below lo, F(x) on
// [lo, hi), 1 from hi, with the bounds rounded to float32 as the sampler's are.
func (d analyticDist) clampedCDF(x float64) float64 {
	switch {
	case x < float64(float32(d.lo)):
		return 0
	case x >= float64(float32(d.hi)):
		return 1
	}
	return d.cdf(x)
}

// moments integrates E[σ] = lo + ∫(1−F) and E[σ²] = lo² + ∫2x(1−F) over
// [lo, hi] with Simpson's rule.
func (d analyticDist) moments() (mean, std float64) {
	const n = 20000
	h := (d.hi - d.lo) / n
	var m1, m2 float64
	for i := 0; i <= n; i++ {
		x := d.lo + float64(i)*h
		w := 2.0
		if i == 0 || i == n {
			w = 1
		} else if i%2 == 1 {
			w = 4
		}
		tail := 1 - d.cdf(x)
		m1 += w * tail
		m2 += w * 2 * x * tail
	}
	mean = d.lo + m1*h/3
	second := d.lo*d.lo + m2*h/3
	return mean, math.Sqrt(second - mean*mean)
}

// TestSigmaSummaryMatchesAnalytic checks what `fmctl sigmas` prints
// (DrawSigmas + SummarizeSigmas) against distributions derived here, for
// settings that are not in the reference vectors: each printed quantile q_p
// must have F(q_p) within p ± 0.003 (the interval [F(q⁻), F(q)] at a point
// mass), the mean within 5 standard errors, and the clamp masses within 5
// standard errors of their exact values.
func TestSigmaSummaryMatchesAnalytic(t *testing.T) {
	const n = 400_000
	uniformCDF := func(u float64) float64 { return math.Min(math.Max(u, 0), 1) }
	logitNormalCDF := func(m, s float64) func(float64) float64 {
		return func(u float64) float64 {
			if u <= 0 {
				return 0
			}
			if u >= 1 {
				return 1
			}
			return distuv.Normal{Mu: m, Sigma: s}.CDF(math.Log(u / (1 - u)))
		}
	}
	// mode: u = f(v) decreases from 1 to 0 on [0,1], so P(u ≤ x) = 1 − f⁻¹(x).
	modeF := func(v float64) float64 {
		c := math.Cos(math.Pi * v / 2)
		return 1 - v - 1.29*(c*c-1+v)
	}
	modeCDF := func(x float64) float64 {
		lo, hi := 0.0, 1.0
		for range 60 {
			mid := (lo + hi) / 2
			if modeF(mid) > x {
				lo = mid
			} else {
				hi = mid
			}
		}
		return 1 - (lo+hi)/2
	}
	for _, c := range []struct {
		name string
		cfg  func(*Config)
		dist analyticDist
	}{
		{"uniform shift 4.5 clamp [0.1,0.95]",
			func(c *Config) { c.TimestepSampling, c.FlowShift, c.SigmaMin, c.SigmaMax = "uniform", 4.5, 0.1, 0.95 },
			analyticDist{cdf: shiftedCDF(uniformCDF, 4.5), lo: 0.1, hi: 0.95}},
		{"logit_normal(-0.5,0.8) shift 2 mix 0.25",
			func(c *Config) {
				c.TimestepSampling, c.LogitMean, c.LogitStd, c.FlowShift, c.MixUniformRatio = "logit_normal", -0.5, 0.8, 2, 0.25
			},
			analyticDist{cdf: func(x float64) float64 {
				return 0.25*shiftedCDF(uniformCDF, 2)(x) + 0.75*shiftedCDF(logitNormalCDF(-0.5, 0.8), 2)(x)
			}, lo: 0, hi: 1}},
		{"mode shift 1.7 clamp [0,0.8]",
			func(c *Config) { c.TimestepSampling, c.FlowShift, c.MixUniformRatio, c.SigmaMax = "mode", 1.7, 0, 0.8 },
			analyticDist{cdf: shiftedCDF(modeCDF, 1.7), lo: 0, hi: 0.8}},
		{"beta(0.6,2) clamp [0.05,1]",
			func(c *Config) { c.TimestepSampling, c.BetaAlpha, c.BetaBeta, c.SigmaMin = "beta", 0.6, 2, 0.05 },
			analyticDist{cdf: distuv.Beta{Alpha: 0.6, Beta: 2}.CDF, lo: 0.05, hi: 1}},
		{"no sigma noise clamp [0.2,0.7]",
			func(c *Config) { c.UseSigmaNoise, c.SigmaMin, c.SigmaMax = false, 0.2, 0.7 },
			analyticDist{cdf: uniformCDF, lo: 0.2, hi: 0.7}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			c.cfg(&cfg)
			sig, err := DrawSigmas(cfg, NewRNG(2024, 0), n, 7)
			if err != nil {
				t.Fatal(err)
			}
			s, err := SummarizeSigmas(sig, cfg.SigmaMin, cfg.SigmaMax)
			if err != nil {
				t.Fatal(err)
			}
			mean, std := c.dist.moments()
			if s.Count != n || math.Abs(s.Mean-mean) >= 5*std/math.Sqrt(n) || math.Abs(s.Std-std) > 0.01*std {
				t.Errorf("count %d mean %.6f std %.6f; analytic mean %.6f std %.6f", s.Count, s.Mean, s.Std, mean, std)
			}
			for i, p := range QuantileLevels {
				q := s.Quantiles.Values()[i]
				below := c.dist.clampedCDF(math.Nextafter(q, math.Inf(-1)))
				at := c.dist.clampedCDF(q)
				if p < below-0.003 || p > at+0.003 {
					t.Errorf("quantile p%02.0f = %.6f has analytic F = [%.5f, %.5f], want %.2f ± 0.003", 100*p, q, below, at, p)
				}
			}
			for _, m := range []struct {
				what      string
				got, want float64
			}{
				{"mass at sigma_min", s.MassAtSigmaMin, c.dist.cdf(c.dist.lo)},
				{"mass at sigma_max", s.MassAtSigmaMax, 1 - c.dist.cdf(c.dist.hi)},
			} {
				se := math.Sqrt(math.Max(m.want, 1.0/n) * (1 - m.want) / n)
				if math.Abs(m.got-m.want) > 5*se {
					t.Errorf("%s = %.5f, analytic %.5f", m.what, m.got, m.want)
				}
			}
			if s.Min < float64(float32(cfg.SigmaMin)) || s.Max > float64(float32(cfg.SigmaMax)) {
				t.Errorf("range [%v, %v] outside the clamps", s.Min, s.Max)
			}
		})
	}
}

func TestSummarizeSigmasExact(t *testing.T) {
	s, err := SummarizeSigmas([]float32{0.875, 0.875, 0.9, 1, 0.875}, 0.875, 1)
	if err != nil {
		t.Fatal(err)
	}
	// NumPy: mean 0.905, std (ddof 0) 0.0484768, quantile(0.5) = 0.875,
	// quantile(0.75) = 0.9, quantile(0.99) = 0.9 + 0.96·0.1.
	if math.Abs(s.Mean-0.905) > 1e-7 || math.Abs(s.Std-0.04847680) > 1e-6 || s.Quantiles.P50 != 0.875 ||
		s.Quantiles.P75 != 0.8999999761581421 || math.Abs(s.Quantiles.P99-(0.9+0.96*0.1)) > 1e-6 ||
		s.MassAtSigmaMin != 0.6 || s.MassAtSigmaMax != 0.2 || s.Min != 0.875 || s.Max != 1 {
		t.Errorf("summary %+v", s)
	}
	// The JSON keys are exactly the ones fmctl sigmas documents.
	data, _ := json.Marshal(s)
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(y func(string) bool) {
		for k := range m {
			if !y(k) {
				return
			}
		}
	})
	if want := []string{"count", "mass_at_sigma_max", "mass_at_sigma_min", "max", "mean", "min", "quantiles", "std"}; !slices.Equal(keys, want) {
		t.Errorf("JSON keys %v, want %v", keys, want)
	}
	if q := m["quantiles"].(map[string]any); len(q) != 7 || q["p01"] == nil || q["p99"] == nil {
		t.Errorf("quantile keys %v", q)
	}
	if _, err := SummarizeSigmas(nil, 0, 1); err == nil {
		t.Error("empty sample accepted")
	}
	if _, err := DrawSigmas(Config{}, NewRNG(1, 0), 10, 1); err == nil || !strings.Contains(err.Error(), "num_train_timesteps") {
		t.Errorf("invalid config: %v", err)
	}
}
