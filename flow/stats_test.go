package flow

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
)

// statDraws is the sample size of the statistical checks: 5·10⁵ puts the
// ±0.003 quantile band at ≥ 4 standard errors for every level.
const statDraws = 500_000

type analyticSigma struct {
	Mean           float64   `json:"mean"`
	Std            float64   `json:"std"`
	Quantiles      []float64 `json:"quantiles"`
	MassAtSigmaMin float64   `json:"mass_at_sigma_min"`
	MassAtSigmaMax float64   `json:"mass_at_sigma_max"`
}

// checkAgainstAnalytic applies spec §13's statistical criteria: |mean −
// analytic| < 5·std/√n, the empirical CDF at each analytic quantile within
// ±0.003 of its level (a point mass at the quantile counts on both sides),
// and the clamp masses within 5 standard errors.
func checkAgainstAnalytic(t *testing.T, name string, sig []float32, lo, hi float64, a analyticSigma) {
	t.Helper()
	s, err := SummarizeSigmas(sig, lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(sig))
	if d := math.Abs(s.Mean - a.Mean); d >= 5*a.Std/math.Sqrt(n) {
		t.Errorf("%s: mean %.6f, analytic %.6f (|d| = %.2g ≥ 5·std/√n = %.2g)", name, s.Mean, a.Mean, d, 5*a.Std/math.Sqrt(n))
	}
	if math.Abs(s.Std-a.Std) > 0.01*a.Std+1e-4 {
		t.Errorf("%s: std %.6f, analytic %.6f", name, s.Std, a.Std)
	}
	sorted := make([]float64, len(sig))
	for i, v := range sig {
		sorted[i] = float64(v)
	}
	slices.Sort(sorted)
	for i, p := range QuantileLevels {
		q := float64(float32(a.Quantiles[i])) // the sample is float32
		below := float64(sort.SearchFloat64s(sorted, q)) / n
		atOrBelow := float64(sort.Search(len(sorted), func(k int) bool { return sorted[k] > q })) / n
		if p < below-0.003 || p > atOrBelow+0.003 {
			t.Errorf("%s: P(σ < %.6f) = %.4f, P(σ ≤ q) = %.4f; analytic level %.2f (±0.003)", name, q, below, atOrBelow, p)
		}
	}
	for _, m := range []struct {
		what      string
		got, want float64
	}{{"mass at sigma_min", s.MassAtSigmaMin, a.MassAtSigmaMin}, {"mass at sigma_max", s.MassAtSigmaMax, a.MassAtSigmaMax}} {
		se := math.Sqrt(math.Max(m.want, 1/n) * (1 - m.want) / n)
		if math.Abs(m.got-m.want) > 5*se {
			t.Errorf("%s: %s %.6f, analytic %.6f (5 s.e. = %.2g)", name, m.what, m.got, m.want, 5*se)
		}
	}
}

func TestSamplersMatchAnalyticStats(t *testing.T) {
	var f struct {
		QuantileLevels []float64 `json:"quantile_levels"`
		Settings       []struct {
			Setting             map[string]any `json:"setting"`
			EffectiveParameters map[string]any `json:"effective_parameters"`
			Seed                uint64         `json:"seed"`
			BatchSizePerCall    int            `json:"batch_size_per_call"`
			Calls               int            `json:"calls"`
			MethodCounts        map[string]int `json:"sampling_method_call_counts"`
			Empirical           struct {
				N    int     `json:"n"`
				Mean float64 `json:"mean"`
			} `json:"empirical_sigma"`
			Analytic analyticSigma `json:"analytic_sigma"`
		} `json:"settings"`
	}
	loadVectors(t, "sampler_stats.json", &f)
	if !slices.Equal(f.QuantileLevels, QuantileLevels) || len(f.Settings) != 18 {
		t.Fatalf("quantile levels %v, %d settings", f.QuantileLevels, len(f.Settings))
	}
	for i, st := range f.Settings {
		name := fmt.Sprintf("%d %v", i, st.Setting)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := configFromKwargs(t, st.EffectiveParameters)
			batch := 4096
			if st.Calls > 1 { // the per-call mix decision: draw in NeMo's batches
				batch = st.BatchSizePerCall
			}
			rng := NewRNG(st.Seed, 0)
			sig := make([]float32, 0, statDraws)
			methods := map[string]int{}
			for len(sig) < statDraws {
				s, ts, m := sampleTimesteps(&cfg, rng, min(batch, statDraws-len(sig)))
				for k, v := range s {
					if ts[k] != float32(v*float32(cfg.NumTrainTimesteps)) {
						t.Fatalf("timestep %v for σ %v", ts[k], v)
					}
				}
				sig = append(sig, s...)
				methods[m]++
			}
			checkAgainstAnalytic(t, name, sig, cfg.SigmaMin, cfg.SigmaMax, st.Analytic)
			// The whole-batch mix decision happens at the configured rate.
			if st.Calls > 1 {
				calls := float64(methods[SamplingUniform] + methods[cfg.TimestepSampling])
				frac := float64(methods[SamplingUniform]) / calls
				if se := math.Sqrt(cfg.MixUniformRatio * (1 - cfg.MixUniformRatio) / calls); math.Abs(frac-cfg.MixUniformRatio) > 5*se {
					t.Errorf("uniform batches %.4f of %v calls, want %v", frac, calls, cfg.MixUniformRatio)
				}
			}
			for m := range methods {
				if _, ok := st.MethodCounts[m]; !ok {
					t.Errorf("method %q, NeMo reported only %v", m, st.MethodCounts)
				}
			}
		})
	}
}
