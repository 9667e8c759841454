package main

import "github.com/spf13/cobra"

// newBenchCmd is the parent of the measurement commands (bench step,
// bench allreduce); each child lives in its own bench_*.go file.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure fmtrain's speed (training step, all-reduce)",
	}
	cmd.AddCommand(
		newBenchStepCmd(),
		newBenchAllReduceCmd(),
		newBenchAllReduceRankCmd(),
	)
	return cmd
}
