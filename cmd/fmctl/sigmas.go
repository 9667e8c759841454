package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fmtrain/fmtrain/flow"
	"github.com/fmtrain/fmtrain/viz"
)

// newSigmasCmd is `fmctl sigmas`: draw σ with the pipeline's own sampler
// and describe the distribution (text, JSON, PNG histogram).
func newSigmasCmd() *cobra.Command {
	var (
		configPath, format, pngPath string
		count, batch, bins          int
		seed                        uint64
	)
	cfg := flow.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "sigmas",
		Short: "Show the σ (timestep) distribution a flow_matching config trains on",
		Long: `Draws σ with fmtrain's pipeline sampler (exactly NeMo's sample_timesteps) and
prints count, mean, std, min, max, quantiles, the probability mass piled up on
each clamp and a histogram. Settings come from flags (NeMo's key names, with
dashes or underscores) or from --config, a job file's flow_matching: section;
flags given explicitly override the file.`,
		Example: `  fmctl sigmas                                   # NeMo defaults: logit_normal, shift 3, mix 0.1
  fmctl sigmas --timestep-sampling uniform --sigma-min 0.875   # Wan2.2 high-noise stage
  fmctl sigmas --config job.yaml --png sigmas.png
  fmctl sigmas --timestep-sampling beta --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				data, err := os.ReadFile(configPath)
				if err != nil {
					return err
				}
				fileCfg, err := flow.ConfigFromJobYAML(data)
				if err != nil {
					return fmt.Errorf("%s: %w", configPath, err)
				}
				overrideChanged(cmd.Flags(), &fileCfg, &cfg)
				cfg = fileCfg
			}
			if format != "text" && format != "json" {
				return fmt.Errorf("--format %q: want text or json", format)
			}
			sig, err := flow.DrawSigmas(cfg, flow.NewRNG(seed, 0), count, batch)
			if err != nil {
				return err
			}
			sum, err := flow.SummarizeSigmas(sig, cfg.SigmaMin, cfg.SigmaMax)
			if err != nil {
				return err
			}
			vals := make([]float64, len(sig))
			for i, v := range sig {
				vals[i] = float64(v)
			}
			if pngPath != "" {
				if err := writeSigmaPNG(pngPath, vals, &cfg, bins); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			printSigmaSummary(out, &cfg, sum, vals, seed, batch, bins)
			if pngPath != "" {
				fmt.Fprintf(out, "\nhistogram written to %s\n", pngPath)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	f.StringVar(&configPath, "config", "", "job YAML whose flow_matching: section to use")
	f.IntVarP(&count, "count", "n", 1_000_000, "number of σ to draw")
	f.IntVar(&batch, "batch-size", 1, "draws per sampler call (the mix decision is made once per call)")
	f.Uint64Var(&seed, "seed", 42, "random seed")
	f.StringVar(&format, "format", "text", "output: text or json")
	f.StringVar(&pngPath, "png", "", "also write a histogram PNG to this file")
	f.IntVar(&bins, "bins", 40, "histogram bins")
	f.StringVar(&cfg.TimestepSampling, "timestep-sampling", cfg.TimestepSampling, "uniform, logit_normal, lognorm, mix, mode or beta")
	f.Float64Var(&cfg.FlowShift, "flow-shift", cfg.FlowShift, "shift s in σ = s·u/(1+(s−1)·u)")
	f.Float64Var(&cfg.LogitMean, "logit-mean", cfg.LogitMean, "mean of the normal (logit_normal only)")
	f.Float64Var(&cfg.LogitStd, "logit-std", cfg.LogitStd, "std of the normal (logit_normal only)")
	f.Float64Var(&cfg.MixUniformRatio, "mix-uniform-ratio", cfg.MixUniformRatio, "probability that a whole batch uses plain uniform u")
	f.Float64Var(&cfg.BetaAlpha, "beta-alpha", cfg.BetaAlpha, "α of the beta sampler")
	f.Float64Var(&cfg.BetaBeta, "beta-beta", cfg.BetaBeta, "β of the beta sampler")
	f.BoolVar(&cfg.UseSigmaNoise, "use-sigma-noise", cfg.UseSigmaNoise, "false: σ = clamp(U(0,1)), no shift")
	f.Float64Var(&cfg.SigmaMin, "sigma-min", cfg.SigmaMin, "lower clamp of σ")
	f.Float64Var(&cfg.SigmaMax, "sigma-max", cfg.SigmaMax, "upper clamp of σ")
	f.IntVar(&cfg.NumTrainTimesteps, "num-train-timesteps", cfg.NumTrainTimesteps, "T (timesteps = σ·T)")
	return cmd
}

// overrideChanged copies the sampling flags the user set explicitly from
// flagCfg into dst (a config read from a file).
func overrideChanged(fs *pflag.FlagSet, dst, flagCfg *flow.Config) {
	set := map[string]func(){
		"timestep-sampling":   func() { dst.TimestepSampling = flagCfg.TimestepSampling },
		"flow-shift":          func() { dst.FlowShift = flagCfg.FlowShift },
		"logit-mean":          func() { dst.LogitMean = flagCfg.LogitMean },
		"logit-std":           func() { dst.LogitStd = flagCfg.LogitStd },
		"mix-uniform-ratio":   func() { dst.MixUniformRatio = flagCfg.MixUniformRatio },
		"beta-alpha":          func() { dst.BetaAlpha = flagCfg.BetaAlpha },
		"beta-beta":           func() { dst.BetaBeta = flagCfg.BetaBeta },
		"use-sigma-noise":     func() { dst.UseSigmaNoise = flagCfg.UseSigmaNoise },
		"sigma-min":           func() { dst.SigmaMin = flagCfg.SigmaMin },
		"sigma-max":           func() { dst.SigmaMax = flagCfg.SigmaMax },
		"num-train-timesteps": func() { dst.NumTrainTimesteps = flagCfg.NumTrainTimesteps },
	}
	for name, apply := range set {
		if fs.Changed(name) {
			apply()
		}
	}
}

func printSigmaSummary(w io.Writer, cfg *flow.Config, s flow.SigmaSummary, vals []float64, seed uint64, batch, bins int) {
	fmt.Fprintf(w, "σ sampler  %s\n", cfg.SamplerDescription())
	fmt.Fprintf(w, "draws      %d (seed %d, batch %d)\n\n", s.Count, seed, batch)
	fmt.Fprintf(w, "  mean %.6f   std %.6f   min %.6f   max %.6f\n", s.Mean, s.Std, s.Min, s.Max)
	q := s.Quantiles
	fmt.Fprintf(w, "  p01 %.4f  p05 %.4f  p25 %.4f  p50 %.4f  p75 %.4f  p95 %.4f  p99 %.4f\n", q.P01, q.P05, q.P25, q.P50, q.P75, q.P95, q.P99)
	fmt.Fprintf(w, "  mass at sigma_min (%g): %.4f%%   mass at sigma_max (%g): %.4f%%\n", cfg.SigmaMin, 100*s.MassAtSigmaMin, cfg.SigmaMax, 100*s.MassAtSigmaMax)
	fmt.Fprintf(w, "  timesteps = σ·%d lie in [%.2f, %.2f]\n\n", cfg.NumTrainTimesteps, s.Min*float64(cfg.NumTrainTimesteps), s.Max*float64(cfg.NumTrainTimesteps))
	lo, hi := sigmaRange(cfg)
	lines := strings.Split(strings.TrimSuffix(viz.TextHistogram(vals, lo, hi, bins, 50), "\n"), "\n")
	// Point the clamps' point masses out: they hide inside their bins.
	if s.MassAtSigmaMin > 0 {
		lines[0] += fmt.Sprintf("  ◀ %.2f%% exactly at sigma_min", 100*s.MassAtSigmaMin)
	}
	if s.MassAtSigmaMax > 0 {
		lines[len(lines)-1] += fmt.Sprintf("  ◀ %.2f%% exactly at sigma_max", 100*s.MassAtSigmaMax)
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

func writeSigmaPNG(path string, vals []float64, cfg *flow.Config, bins int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	lo, hi := sigmaRange(cfg)
	err = viz.Histogram(f, vals, viz.HistogramOptions{
		Lo:     lo,
		Hi:     hi,
		Title:  "σ: " + cfg.SamplerDescription(),
		XLabel: "σ",
		Bins:   bins,
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// sigmaRange is the histogram's x range: the clamp interval (every σ lies
// in it), widened when it is a single point.
func sigmaRange(cfg *flow.Config) (lo, hi float64) {
	lo, hi = cfg.SigmaMin, cfg.SigmaMax
	if !(hi > lo) {
		lo, hi = lo-0.5, hi+0.5
	}
	return lo, hi
}
