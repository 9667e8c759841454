package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fmtrain/fmtrain/local"
)

func newLocalCmd() *cobra.Command {
	var opts local.Options
	var lines bool
	cmd := &cobra.Command{
		Use:   "local JOB.yaml",
		Short: "Run the whole system on this machine (embedded etcd and NATS, a coordinator, CPU workers) on one job",
		Long: `local starts embedded etcd and NATS, a coordinator and CPU worker processes, generates the
demo dataset if the job's manifest is missing, submits the job, shows its progress, and when
it ends writes runs/<job>/loss.png and runs/<job>/samples.png (one row per caption).`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().IntVar(&opts.Workers, "workers", 2, "worker processes to start")
	cmd.Flags().StringVar(&opts.RunsDir, "runs-dir", "runs", "directory for runs/<job>/ (state, logs, plots)")
	cmd.Flags().BoolVar(&lines, "lines", false, "print one line per logged step instead of a progress bar")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this binary to start workers with: %w", err)
		}
		opts.SpecPath, opts.Exe, opts.WorkerArgs = args[0], exe, []string{workerCmdName}
		opts.Out = cmd.OutOrStdout()
		opts.Bar = !lines && term.IsTerminal(int(os.Stdout.Fd()))
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		res, err := local.Run(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(opts.Out, "job %s finished in %s: %s\n", res.JobID, res.Elapsed.Round(1e9), res.Dir)
		return nil
	}
	return cmd
}
