package sample

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/train"
)

// Request names a checkpoint and, optionally, overrides of its job's
// sample: section. Zero fields take the job's values.
type Request struct {
	Checkpoint string // a checkpoint directory (step_N)
	// Prompts is a prompts file; default spec sample.prompts, else the
	// dataset manifest's prompts file.
	Prompts   string
	Steps     int
	Guidance  float64
	PerPrompt int
	Seed      uint64
	// Weights picks "ema" or "model"; default EMA when the checkpoint has it.
	Weights string
	// LatentShape overrides the dataset's latent shape ([C,H,W] or [C,F,H,W]).
	LatentShape []int
}

// Result is a set of samples.
type Result struct {
	Latents     []float32 // [len(Captions)·PerPrompt, LatentShape…], prompt-major
	LatentShape []int
	Captions    []string // one per prompt (grid row)
	PerPrompt   int
	PixelSpace  bool // the latents are RGB images in [-1,1]
}

// FromCheckpoint loads the checkpoint's model (EMA weights when present)
// and job spec and samples its prompts.
func FromCheckpoint(ctx context.Context, req Request, be kernels.Backend) (*Result, error) {
	h, err := checkpoint.Verify(req.Checkpoint)
	if err != nil {
		return nil, err
	}
	spec, err := jobspec.Parse([]byte(h.Spec))
	if err != nil {
		return nil, fmt.Errorf("sample: the job spec stored in %s: %w", req.Checkpoint, err)
	}
	sp := spec.Sample
	steps, guidance, per, seed := pick(req.Steps, sp.NumSteps), req.Guidance, pick(req.PerPrompt, sp.PerPrompt), req.Seed
	if guidance == 0 {
		guidance = sp.GuidanceScale
	}
	if seed == 0 {
		seed = spec.Seed
	}
	shape, pixel := req.LatentShape, false
	prompts := req.Prompts
	if prompts == "" {
		prompts = sp.Prompts
	}
	if m, err := data.ReadManifest(spec.Data.Manifest); err == nil {
		if shape == nil {
			shape = m.LatentShape
		}
		pixel = m.PixelSpace && len(shape) == 3 && shape[0] == 3
		if prompts == "" && m.Prompts != "" {
			prompts = filepath.Join(filepath.Dir(spec.Data.Manifest), m.Prompts)
		}
	} else if shape == nil {
		return nil, fmt.Errorf("sample: no latent shape: the job's dataset is unreadable (%v); pass one", err)
	}
	if prompts == "" {
		return nil, fmt.Errorf("sample: no prompts: set sample.prompts in the job or pass a prompts file")
	}
	p, err := data.ReadPrompts(prompts)
	if err != nil {
		return nil, err
	}
	_, hasEMA := h.Files[checkpoint.EMAFile]
	useEMA := hasEMA
	switch req.Weights {
	case "ema":
		useEMA = true
	case "model":
		useEMA = false
	case "":
	default:
		return nil, fmt.Errorf("sample: weights %q must be \"ema\" or \"model\"", req.Weights)
	}
	net, err := train.LoadDiT(req.Checkpoint, be, useEMA)
	if err != nil {
		return nil, err
	}
	fm := spec.FlowMatching
	lat, err := Euler(ctx, net, shape, p, per, Options{Steps: steps, Guidance: guidance, FlowShift: fm.FlowShift,
		NumTrainTimesteps: fm.NumTrainTimesteps, Seed: seed, Adapter: fm.AdapterType})
	if err != nil {
		return nil, err
	}
	return &Result{Latents: lat, LatentShape: shape, Captions: p.Captions, PerPrompt: per, PixelSpace: pixel}, nil
}

func pick(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// WriteLatents writes the samples as safetensors (see the package func).
func (r *Result) WriteLatents(path string) error {
	return WriteLatents(path, r.Latents, r.LatentShape, Repeat(r.Captions, r.PerPrompt))
}

// WriteGrid writes the PNG grid, one row per caption; only for pixel-space
// samples.
func (r *Result) WriteGrid(path string) error {
	if !r.PixelSpace {
		return fmt.Errorf("sample: the latents are not pixel-space RGB; decode them with the VAE instead")
	}
	return WriteGrid(path, r.Latents, r.LatentShape, r.Captions, r.PerPrompt)
}

// GridPNG samples the checkpoint with spec's sample: section (which may
// differ from the one stored in the checkpoint) and writes the PNG grid to
// out: the one call `fmctl local` needs at the end of a run.
func GridPNG(ctx context.Context, ckpt string, spec *jobspec.Spec, be kernels.Backend, out string) error {
	sp := spec.Sample
	res, err := FromCheckpoint(ctx, Request{Checkpoint: ckpt, Prompts: sp.Prompts, Steps: sp.NumSteps,
		Guidance: sp.GuidanceScale, PerPrompt: sp.PerPrompt, Seed: spec.Seed}, be)
	if err != nil {
		return err
	}
	return res.WriteGrid(out)
}
