package main

import (
	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/monitor"
)

func newLogsCmd() *cobra.Command {
	var follow bool
	var rank int
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's worker logs and events from NATS (-f follows until the job ends)",
		Args:  cobra.ExactArgs(1),
	}
	natsURL := addNATSFlag(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records until the job ends")
	cmd.Flags().IntVar(&rank, "rank", -1, "only this rank's records (-1: all)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		nc, js, err := connectNATS(*natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		return monitor.PrintLogs(cmd.Context(), js, args[0], monitor.LogsOptions{Out: cmd.OutOrStdout(), Follow: follow, Rank: rank})
	}
	return cmd
}
