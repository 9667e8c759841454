package main

import (
	"fmt"
	"os"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/spf13/cobra"
)

func newSubmitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "submit job.yaml",
		Short: "Validate a job spec and put it in the job queue (etcd); prints the job id",
		Long: `submit checks job.yaml strictly (unknown keys and invalid values are rejected with the
field's name) and stores it under a new job id with a create-only transaction. The
coordinator picks it up and starts it when min_workers workers are available.`,
		Args: cobra.ExactArgs(1),
	}
	etcd := addEtcdFlag(cmd)
	id := cmd.Flags().String("id", "", "job id (default: the spec's name and 6 random hex digits)")
	wait := cmd.Flags().Bool("wait", false, "wait until the job finishes, fails or is cancelled; exit 1 unless it finished")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		cli, err := connectEtcd(cmd, *etcd)
		if err != nil {
			return err
		}
		defer cli.Close()
		jobID := *id
		if jobID == "" {
			spec, err := jobspec.Parse(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			jobID = jobstore.NewJobID(spec.Name)
		}
		if _, err := jobstore.Submit(cmd.Context(), cli, jobID, data); err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), jobID)
		if !*wait {
			return nil
		}
		st, err := jobstore.Wait(cmd.Context(), cli, jobID, func(*api.JobStatus) bool { return false })
		if err != nil {
			return err
		}
		if st.State != api.JobFinished {
			return fmt.Errorf("job %s %s: %s", jobID, st.State, st.Error)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "job %s finished at step %d\n", jobID, st.Step)
		return nil
	}
	return cmd
}
