package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/bench/stepbench"
)

// newBenchStepCmd is `fmctl bench step`: time FM-DiT training steps on one
// of shared/bench/configs.md's configurations.
func newBenchStepCmd() *cobra.Command {
	var (
		config, format, backend string
		steps, warmup           int
		seed                    uint64
	)
	cmd := &cobra.Command{
		Use:   "step",
		Short: "Median FM-DiT training step time (forward + loss + backward + AdamW), GFLOP/s and peak memory",
		Long: "Runs warm-up steps, then timed steps of forward + MSE loss + backward + AdamW (lr 1e-4, weight decay 0.01)\n" +
			"in float32 with DiT initialisation, and reports the median step time, GFLOP/s by shared/bench/configs.md's\n" +
			"FLOP rule and the process's peak resident memory. Configs: " + strings.Join(stepbench.Names(), ", ") + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := stepbench.Lookup(config)
			if err != nil {
				return err
			}
			if steps < 10 {
				return fmt.Errorf("--steps (%d) must be at least 10", steps)
			}
			if format != "text" && format != "json" {
				return fmt.Errorf("--format %q: want text or json", format)
			}
			res, err := stepbench.Run(cmd.Context(), c, stepbench.Options{Steps: steps, Warmup: warmup, Backend: backend, Seed: seed})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				return json.NewEncoder(out).Encode(res)
			}
			fmt.Fprintf(out, "%s: median step %.1f ms over %d steps (after %d warm-up), %.1f GFLOP/s (%.2f GFLOP/step), peak RSS %.0f MiB\n",
				res.Config, res.MedianStepMS, len(res.StepsMS), res.Warmup, res.GFLOPS, res.StepGFLOP, res.PeakRSSMB)
			fmt.Fprintf(out, "CPU time %.1f ms/step; backend %s, GEMM %s, %d workers, %d parameters, loss %.4f → %.4f\n",
				res.CPUMSPerStep, res.Backend, res.GEMMKernel, res.Workers, res.Params, res.FirstLoss, res.LastLoss)
			if res.DeviceMemMB > 0 {
				fmt.Fprintf(out, "GPU memory in use %.0f MiB\n", res.DeviceMemMB)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&config, "config", "bench-T", "benchmark configuration: "+strings.Join(stepbench.Names(), ", "))
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&backend, "backend", "cpu", "kernels backend")
	cmd.Flags().IntVar(&steps, "steps", 10, "timed steps (at least 10)")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed warm-up steps")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "seed of the initialisation and the synthetic batch")
	return cmd
}
