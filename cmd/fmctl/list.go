package main

import (
	"encoding/json"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/spf13/cobra"
)

func newListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every job in the queue with its state and step",
		Args:  cobra.NoArgs,
	}
	etcd := addEtcdFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print a JSON array of job statuses (api.JobStatus)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cli, err := connectEtcd(cmd, *etcd)
		if err != nil {
			return err
		}
		defer cli.Close()
		jobs, err := jobstore.List(cmd.Context(), cli)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(jobs)
		}
		return jobstore.WriteTable(cmd.OutOrStdout(), jobs, time.Now())
	}
	return cmd
}
