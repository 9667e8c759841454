package main

import (
	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/worker"
)

// workerCmdName is the hidden subcommand `fmctl local` starts its worker
// processes with: the same worker as the fm-worker binary, so one binary
// runs everything on one machine.
const workerCmdName = "worker"

func newWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:                workerCmdName + " [fm-worker flags]",
		Short:              "Run an fm-worker (fmctl local starts its workers this way; see fm-worker -h)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := worker.ParseFlags(args, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return worker.MainWithSignals(cmd.Context(), cfg, cfg.Logger(cmd.ErrOrStderr()))
		},
	}
}
