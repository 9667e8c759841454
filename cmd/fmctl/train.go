package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/sample"
	"github.com/fmtrain/fmtrain/train"
	"github.com/fmtrain/fmtrain/viz"
)

// newTrainCmd is `fmctl train job.yaml`: the whole job in this process, on
// one device, with a progress bar; at the end a loss plot and (pixel-space
// data) a grid of samples.
func newTrainCmd() *cobra.Command {
	var (
		device, resume, outDir string
		verify, noSamples      bool
		quiet                  bool
	)
	cmd := &cobra.Command{
		Use:   "train JOB.yaml",
		Short: "Train a job in this process (single device) with a progress bar",
		Long: `Runs the job spec's training on one device without a cluster: the same loop,
data order, checkpoints and metrics as a distributed worker with world size 1.
Ctrl-C finishes the current step, writes a checkpoint and exits; run again with
checkpoint.restore_from: latest (or --resume DIR) to continue exactly.

When data.manifest is missing and its directory is empty, the demo dataset
(fmctl data synth) is written there first.

Writes into --out (default: the checkpoint directory): metrics.jsonl (one line
per logged step), loss.png (loss, lr and gradient norm curves) and, for
pixel-space data with prompts, samples.png (one row per caption).`,
		Example: `  fmctl train examples/demo.yaml
  fmctl train job.yaml --resume checkpoints/step_00000500`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			spec, err := jobspec.Parse(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if device != "" {
				spec.Device = device
			}
			if outDir == "" {
				outDir = spec.Checkpoint.CheckpointDir
				if !spec.Checkpoint.Enabled || outDir == "" {
					outDir = "."
				}
			}
			return runTrain(cmd.Context(), spec, trainFlags{resume: resume, outDir: outDir, verify: verify,
				samples: !noSamples, quiet: quiet}, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&device, "device", "", "override the job's device: cpu, cuda or auto")
	f.StringVar(&resume, "resume", "", "checkpoint directory to resume from (overrides checkpoint.restore_from)")
	f.StringVar(&outDir, "out", "", "where metrics.jsonl, loss.png and samples.png go (default: checkpoint_dir)")
	f.BoolVar(&verify, "verify-data", false, "hash every shard against the manifest before training")
	f.BoolVar(&noSamples, "no-samples", false, "skip sampling at the end")
	f.BoolVar(&quiet, "quiet", false, "no progress bar; log a line per logged step")
	return cmd
}

type trainFlags struct {
	resume, outDir         string
	verify, samples, quiet bool
}

func runTrain(ctx context.Context, spec *jobspec.Spec, fl trainFlags, out, errOut io.Writer) error {
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := os.MkdirAll(fl.outDir, 0o755); err != nil {
		return err
	}
	be, err := openBackend(spec.Device, log)
	if err != nil {
		return err
	}
	if wrote, err := data.EnsureSynth(spec.Data.Manifest, spec.Seed, spec.Model.DiT.TextDim); err != nil {
		return err
	} else if wrote {
		fmt.Fprintf(out, "wrote the demo dataset to %s\n", filepath.Dir(spec.Data.Manifest))
	}
	ds, err := data.Open(spec.Data.Manifest, data.OpenOptions{Verify: fl.verify})
	if err != nil {
		return err
	}
	defer ds.Close()
	net, err := train.BuildNet(spec, be)
	if err != nil {
		return err
	}
	var rec *metricsLog // opened once the start step is known
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if _, ok := <-sigs; ok {
			fmt.Fprintln(errOut, "\nstopping after this step (again to abort)")
			close(stop)
		}
		if _, ok := <-sigs; ok {
			cancel()
		}
	}()

	var bar *progressbar.ProgressBar
	tr, err := train.New(ctx, train.Options{
		Spec: spec, Net: net, Data: ds, ResumeFrom: fl.resume, WriteCheckpoints: spec.Checkpoint.Enabled,
		Stop: stop, Logger: log,
		OnStep: func(m train.Metrics) {
			if bar != nil {
				bar.Describe(fmt.Sprintf("loss %.4f  lr %.2e  %.0f samples/s", m.Loss, m.LR, m.SamplesPerSec))
				bar.Set64(m.Step)
			}
		},
		OnMetrics: func(m train.Metrics) {
			rec.add(m)
			if bar == nil {
				fmt.Fprintf(out, "step %d/%d  loss %.4f  lr %.3e  grad_norm %.3f  %.1f samples/s\n",
					m.Step, m.TotalSteps, m.Loss, m.LR, m.GradNorm, m.SamplesPerSec)
			}
		},
	})
	if err != nil {
		return err
	}
	if rec, err = openMetricsLog(filepath.Join(fl.outDir, "metrics.jsonl"), tr.CurrentStep()); err != nil {
		return err
	}
	defer rec.close()
	fmt.Fprintf(out, "training %s: %d params, %d samples, steps %d → %d, global batch %d\n",
		spec.Name, len(net.Params()), ds.Len(), tr.CurrentStep(), tr.TotalStepCount(), spec.StepScheduler.GlobalBatchSize)
	if !fl.quiet {
		bar = progressbar.NewOptions64(tr.TotalStepCount(), progressbar.OptionSetWriter(errOut),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetWidth(30))
		bar.Set64(tr.CurrentStep())
	}
	res, runErr := tr.Run(ctx)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(errOut)
	}
	if errors.Is(runErr, train.ErrStopped) && spec.Checkpoint.Enabled {
		if step, ok := checkpoint.StepOf(filepath.Base(res.Checkpoint)); !ok || step != res.Step {
			p, err := tr.Save(context.Background())
			if err != nil {
				return fmt.Errorf("stopped at step %d, but the checkpoint failed: %w", res.Step, err)
			}
			res.Checkpoint = p
		}
	}
	if len(rec.curves[0].X) > 0 {
		plot := filepath.Join(fl.outDir, "loss.png")
		if err := viz.SavePNG(plot, func(w io.Writer) error { return viz.Curves(w, spec.Name, rec.curves[:]) }); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", plot)
	}
	if runErr != nil {
		if errors.Is(runErr, train.ErrStopped) && res.Checkpoint != "" {
			fmt.Fprintf(out, "stopped at step %d; checkpoint %s (resume with --resume %s)\n", res.Step, res.Checkpoint, res.Checkpoint)
			return nil
		}
		return runErr
	}
	fmt.Fprintf(out, "done: %d steps, final loss %.4f, checkpoint %s\n", res.Step, res.Loss, res.Checkpoint)
	if fl.samples && res.Checkpoint != "" && ds.Manifest.PixelSpace {
		png := filepath.Join(fl.outDir, "samples.png")
		if spec.Sample.Prompts == "" && ds.Manifest.Prompts != "" {
			spec.Sample.Prompts = filepath.Join(filepath.Dir(spec.Data.Manifest), ds.Manifest.Prompts)
		}
		if err := sample.GridPNG(ctx, res.Checkpoint, spec, be, png); err != nil {
			return fmt.Errorf("sampling: %w", err)
		}
		fmt.Fprintf(out, "wrote %s (one row per caption, %d Euler steps, guidance %g)\n", png, spec.Sample.NumSteps, spec.Sample.GuidanceScale)
	}
	return nil
}

// metricsLine is one metrics.jsonl record.
func metricsLine(m train.Metrics) map[string]any {
	return map[string]any{
		"step": m.Step, "epoch": m.Epoch, "loss": m.Loss, "unweighted_loss": m.UnweightedLoss, "lr": m.LR,
		"grad_norm": m.GradNorm, "sigma_min": m.SigmaMin, "sigma_max": m.SigmaMax, "sigma_mean": m.SigmaMean,
		"samples_per_sec": m.SamplesPerSec, "step_ms": float64(m.StepTime.Microseconds()) / 1000,
		"elapsed_s": m.Elapsed.Seconds(),
	}
}

// openBackend picks the kernels backend for a job's device: cpu, cuda, or
// auto (CUDA when its backend is registered and opens, else the CPU).
func openBackend(device string, log *slog.Logger) (kernels.Backend, error) {
	switch device {
	case "cpu":
		return kernels.Open("cpu")
	case "cuda":
		be, err := kernels.Open("cuda")
		if err != nil {
			return nil, fmt.Errorf("device cuda: %w", err)
		}
		return be, nil
	}
	if slices.Contains(kernels.Names(), "cuda") {
		if be, err := kernels.Open("cuda"); err == nil {
			return be, nil
		} else {
			log.Warn("device auto: CUDA unavailable, training on the CPU", "reason", err)
		}
	}
	return kernels.Open("cpu")
}

// metricsLog is metrics.jsonl plus the curves of loss.png. A resumed run
// keeps the lines up to its start step and appends, so the file and the plot
// cover the whole run.
type metricsLog struct {
	f      *os.File
	enc    *json.Encoder
	curves [3]viz.Series
}

func openMetricsLog(path string, start int64) (*metricsLog, error) {
	l := &metricsLog{curves: [3]viz.Series{{Name: "loss", LogY: true}, {Name: "lr"}, {Name: "grad norm", LogY: true}}}
	var kept []map[string]any
	if start > 0 {
		if raw, err := os.ReadFile(path); err == nil {
			for _, line := range bytes.Split(raw, []byte("\n")) {
				var m map[string]any
				if json.Unmarshal(line, &m) != nil {
					continue
				}
				if step, ok := m["step"].(float64); ok && int64(step) <= start {
					kept = append(kept, m)
				}
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	l.f, l.enc = f, json.NewEncoder(f)
	for _, m := range kept {
		l.write(m)
	}
	return l, nil
}

func (l *metricsLog) add(m train.Metrics) { l.write(metricsLine(m)) }

func (l *metricsLog) write(m map[string]any) {
	l.enc.Encode(m)
	x, _ := m["step"].(float64)
	if v, ok := m["step"].(int64); ok {
		x = float64(v)
	}
	for i, k := range []string{"loss", "lr", "grad_norm"} {
		y, _ := m[k].(float64)
		l.curves[i].X, l.curves[i].Y = append(l.curves[i].X, x), append(l.curves[i].Y, y)
	}
}

func (l *metricsLog) close() error { return l.f.Close() }
