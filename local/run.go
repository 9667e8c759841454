package local

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/monitor"
	"github.com/fmtrain/fmtrain/sample"
	"github.com/fmtrain/fmtrain/telemetry"
)

// Options configures Run.
type Options struct {
	// SpecPath is the job YAML.
	SpecPath string
	// Workers is the number of worker processes (default 2).
	Workers int
	// RunsDir is where runs/<job>/ goes (default "runs").
	RunsDir string
	// Exe and WorkerArgs start a worker (see ClusterOptions).
	Exe        string
	WorkerArgs []string
	// Out receives the progress; Bar draws a progress bar on it.
	Out io.Writer
	Bar bool
	// Logger receives the cluster's own log (the workers log to files).
	Logger *slog.Logger
}

// Result is what a local run produced.
type Result struct {
	JobID    string
	Final    *telemetry.Event
	Dir      string
	LossPlot string
	Samples  string
	Elapsed  time.Duration
}

// Run is `fmctl local`: it generates the demo dataset if the spec's manifest
// is missing, starts a cluster under RunsDir/<job>/, submits the job, shows
// its progress until it ends, and writes loss.png and samples.png there.
func Run(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.RunsDir == "" {
		opts.RunsDir = "runs"
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	raw, err := os.ReadFile(opts.SpecPath)
	if err != nil {
		return nil, fmt.Errorf("local: reading the job spec: %w", err)
	}
	spec, err := jobspec.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("local: %s: %w", opts.SpecPath, err)
	}
	job := spec.Name
	if err := telemetry.CheckJobID(job); err != nil {
		return nil, fmt.Errorf("local: %s: name %q is the job id here and must be letters, digits, '-' or '_'", opts.SpecPath, job)
	}
	if spec.MaxWorkers < opts.Workers {
		fmt.Fprintf(opts.Out, "note: the job allows at most %d workers (max_workers); %d will idle\n", spec.MaxWorkers, opts.Workers-spec.MaxWorkers)
	}
	dir := filepath.Join(opts.RunsDir, job)
	wrote, err := data.EnsureSynth(spec.Data.Manifest, spec.Seed, spec.Model.DiT.TextDim)
	if err != nil {
		return nil, fmt.Errorf("local: data.manifest: %w", err)
	}
	if wrote {
		fmt.Fprintf(opts.Out, "generated the demo dataset in %s (coloured shapes with caption embeddings)\n", filepath.Dir(spec.Data.Manifest))
	}
	// A local run starts from scratch: its own services' state and, when
	// they live under the run directory, old checkpoints go.
	for _, d := range []string{"cluster", "loss.png", "samples.png"} {
		if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	if ck := spec.Checkpoint.CheckpointDir; spec.Checkpoint.RestoreFrom == "" && isUnder(ck, dir) {
		if err := os.RemoveAll(ck); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}

	fmt.Fprintf(opts.Out, "starting etcd, NATS, a coordinator and %d CPU workers (state and logs in %s)\n", opts.Workers, filepath.Join(dir, "cluster"))
	c, err := StartCluster(ctx, ClusterOptions{
		Dir: filepath.Join(dir, "cluster"), Exe: opts.Exe, WorkerArgs: opts.WorkerArgs, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for i := range opts.Workers {
		if _, err := c.StartWorker(WorkerID(i)); err != nil {
			return nil, err
		}
	}
	if err := c.Submit(ctx, job, raw); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Out, "submitted job %s (NATS %s; in another terminal: fmctl watch %s --nats-url %s)\n", job, c.NATSURL(), job, c.NATSURL())

	final, err := monitor.Watch(ctx, c.JS, job, monitor.WatchOptions{Out: opts.Out, Bar: opts.Bar})
	if err != nil {
		return nil, err
	}
	res := &Result{JobID: job, Final: final, Dir: dir}
	if final == nil {
		return res, fmt.Errorf("local: interrupted: %w", context.Cause(ctx))
	}
	if final.Kind != telemetry.EventFinished {
		for i := range opts.Workers {
			log := filepath.Join(dir, "cluster", "logs", WorkerID(i)+".log")
			fmt.Fprintf(opts.Out, "--- end of %s\n%s", log, tail(log, 1500))
		}
		return res, fmt.Errorf("local: job %s %s: %s", job, final.Kind, final.Error)
	}
	st, err := c.Status(ctx, job)
	if err != nil {
		return res, err
	}
	c.StopWorkers(20 * time.Second) // free the cores for sampling

	res.LossPlot = filepath.Join(dir, "loss.png")
	curves, err := monitor.ReadCurves(ctx, c.JS, job)
	if err != nil {
		return res, err
	}
	if err := monitor.WritePlot(res.LossPlot, job, curves); err != nil {
		return res, err
	}
	fmt.Fprintf(opts.Out, "wrote %s\n", res.LossPlot)

	if st != nil && st.LastCheckpoint != nil {
		res.Samples = filepath.Join(dir, "samples.png")
		backend, err := kernels.Open("cpu")
		if err != nil {
			return res, err
		}
		fmt.Fprintf(opts.Out, "sampling from %s (%d Euler steps, guidance %.1f)\n", st.LastCheckpoint.Path, spec.Sample.NumSteps, spec.Sample.GuidanceScale)
		smp, err := sample.FromCheckpoint(ctx, sample.Request{Checkpoint: st.LastCheckpoint.Path}, backend)
		if err != nil {
			return res, fmt.Errorf("local: sampling: %w", err)
		}
		if !smp.PixelSpace {
			res.Samples = filepath.Join(dir, "samples.safetensors")
			if err := smp.WriteLatents(res.Samples); err != nil {
				return res, err
			}
		} else if err := smp.WriteGrid(res.Samples); err != nil {
			return res, err
		}
		fmt.Fprintf(opts.Out, "wrote %s (one row per caption: %s)\n", res.Samples, strings.Join(smp.Captions, "; "))
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

func isUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
