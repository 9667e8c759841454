package jobstore

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

// WriteTable prints one line per job, as fmctl list shows them.
func WriteTable(w io.Writer, jobs []*api.JobStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tNAME\tSTATE\tSTEP\tGEN\tWORKERS\tUPDATED")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.Name, j.State, stepString(j),
			dash(j.Generation), dash(len(j.Workers)), ago(j.UpdatedAt, now))
	}
	return tw.Flush()
}

// WriteStatus prints one job's status in full, as fmctl status shows it.
func WriteStatus(w io.Writer, j *api.JobStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("job", j.JobID)
	row("name", j.Name)
	row("state", string(j.State))
	row("step", stepString(j))
	if j.Generation > 0 {
		row("generation", fmt.Sprint(j.Generation))
	}
	if len(j.Workers) > 0 {
		row("workers", fmt.Sprintf("%d (%s), grad accumulation %d", len(j.Workers), strings.Join(j.Workers, ", "), j.GradAccum))
	}
	if j.MaxWorkers > 0 {
		row("elastic", fmt.Sprintf("%d to %d workers", j.MinWorkers, j.MaxWorkers))
	}
	if c := j.LastCheckpoint; c != nil {
		row("checkpoint", fmt.Sprintf("%s (step %d, %s)", c.Path, c.Step, c.Checksum))
	}
	if j.Restarts > 0 {
		row("restarts", fmt.Sprint(j.Restarts))
	}
	row("error", j.Error)
	row("submitted", stamp(j.SubmittedAt, now))
	row("started", stamp(j.StartedAt, now))
	row("finished", stamp(j.FinishedAt, now))
	row("updated", stamp(j.UpdatedAt, now))
	return tw.Flush()
}

func stepString(j *api.JobStatus) string {
	if j.MaxSteps > 0 {
		return fmt.Sprintf("%d/%d", j.Step, j.MaxSteps)
	}
	return fmt.Sprint(j.Step)
}

func dash[T int | uint64](v T) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func stamp(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + ")"
}
