// Command fmctl is the user's command line for fmtrain: it submits and watches
// jobs, runs everything on one machine (fmctl local), and hosts the tools that
// explain and measure the system (sigmas, bench, sample, data).
//
// main only wires subcommands together; the work lives in importable packages.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "fmctl:", err)
		os.Exit(1)
	}
}

// newRootCmd builds the command tree. Each subcommand lives in its own file
// and is added here, one line each.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "fmctl",
		Short:         "fmtrain: train flow-matching diffusion models across many GPUs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newBenchCmd(),
		newSubmitCmd(),
		newListCmd(),
		newStatusCmd(),
		newCancelCmd(),
		newWatchCmd(),
		newLogsCmd(),
		newPlotCmd(),
		newLocalCmd(),
		newWorkerCmd(),
		newSigmasCmd(),
		newTrainCmd(),
		newSampleCmd(),
		newDataCmd(),
	)
	return root
}
