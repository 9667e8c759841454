package main

import (
	"fmt"

	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/spf13/cobra"
)

func newCancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Ask the coordinator to stop a job (its workers are released; checkpoints stay)",
		Args:  cobra.ExactArgs(1),
	}
	etcd := addEtcdFlag(cmd)
	reason := cmd.Flags().String("reason", "cancelled by user", "why, shown in the job's status")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cli, err := connectEtcd(cmd, *etcd)
		if err != nil {
			return err
		}
		defer cli.Close()
		if err := jobstore.Cancel(cmd.Context(), cli, args[0], *reason); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "cancel of %s requested\n", args[0])
		return nil
	}
	return cmd
}
