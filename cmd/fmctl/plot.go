package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/monitor"
)

func newPlotCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "plot JOB",
		Short: "Draw a job's loss, learning-rate and grad-norm curves to a PNG (from its NATS JetStream metrics)",
		Args:  cobra.ExactArgs(1),
	}
	natsURL := addNATSFlag(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "PNG to write (default <job>-curves.png)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		job := args[0]
		if out == "" {
			out = job + "-curves.png"
		}
		nc, js, err := connectNATS(*natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := monitor.ReadCurves(cmd.Context(), js, job)
		if err != nil {
			return err
		}
		if err := monitor.WritePlot(out, job, c); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d steps, %g to %g)\n", out, c.Len(), c.Step[0], c.Step[c.Len()-1])
		return nil
	}
	return cmd
}
