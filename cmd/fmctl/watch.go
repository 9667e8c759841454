package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fmtrain/fmtrain/monitor"
	"github.com/fmtrain/fmtrain/telemetry"
)

func newWatchCmd() *cobra.Command {
	var logs, lines bool
	cmd := &cobra.Command{
		Use:   "watch JOB",
		Short: "Show a job's live progress bar, latest metrics and events (from NATS) until it ends",
		Args:  cobra.ExactArgs(1),
	}
	natsURL := addNATSFlag(cmd)
	cmd.Flags().BoolVar(&logs, "logs", false, "also print the workers' log records")
	cmd.Flags().BoolVar(&lines, "lines", false, "print one line per logged step instead of a progress bar (default when not on a terminal)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		nc, js, err := connectNATS(*natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		bar := !lines && term.IsTerminal(int(os.Stdout.Fd()))
		final, err := monitor.Watch(cmd.Context(), js, args[0], monitor.WatchOptions{Out: cmd.OutOrStdout(), Bar: bar, Logs: logs})
		if err != nil {
			return err
		}
		if final != nil && final.Kind != telemetry.EventFinished {
			return fmt.Errorf("job %s %s: %s", args[0], final.Kind, final.Error)
		}
		return nil
	}
	return cmd
}
