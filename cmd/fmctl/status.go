package main

import (
	"encoding/json"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show a job's state, step, generation, workers, last checkpoint and error",
		Args:  cobra.ExactArgs(1),
	}
	etcd := addEtcdFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the status as JSON (api.JobStatus)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cli, err := connectEtcd(cmd, *etcd)
		if err != nil {
			return err
		}
		defer cli.Close()
		st, err := jobstore.Status(cmd.Context(), cli, args[0])
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return jobstore.WriteStatus(cmd.OutOrStdout(), st, time.Now())
	}
	return cmd
}
