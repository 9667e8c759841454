package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/sample"
)

// newSampleCmd is `fmctl sample CHECKPOINT`: Euler + CFG sampling.
func newSampleCmd() *cobra.Command {
	var (
		req       sample.Request
		out, grid string
		shape     string
		device    string
	)
	cmd := &cobra.Command{
		Use:   "sample CHECKPOINT_DIR",
		Short: "Sample from a checkpoint: Euler steps with classifier-free guidance",
		Long: `Integrates the learned velocity from noise (σ = 1) to data (σ = 0) with Euler
steps on the job's flow-shifted σ schedule, with classifier-free guidance whose
unconditional branch is zeroed text (what data.text_dropout_prob trained).
Settings default to the job's sample: section stored in the checkpoint; the
model is its EMA weights when it has them. Writes the latents as safetensors
and, for pixel-space data, a PNG grid with one row per caption.`,
		Example: `  fmctl sample checkpoints/step_00002000
  fmctl sample checkpoints/step_00002000 --guidance 6 --steps 50 --per-prompt 8 --grid big.png`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Checkpoint = args[0]
			if shape != "" {
				for _, s := range strings.Split(shape, ",") {
					d, err := strconv.Atoi(strings.TrimSpace(s))
					if err != nil {
						return fmt.Errorf("--shape %q: %w", shape, err)
					}
					req.LatentShape = append(req.LatentShape, d)
				}
			}
			be, err := openBackend(device, slog.Default())
			if err != nil {
				return err
			}
			res, err := sample.FromCheckpoint(cmd.Context(), req, be)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(args[0], "samples.safetensors")
			}
			if err := res.WriteLatents(out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (%d samples %v)\n", out, len(res.Captions)*res.PerPrompt, res.LatentShape)
			if res.PixelSpace {
				if grid == "" {
					grid = filepath.Join(args[0], "samples.png")
				}
				if err := res.WriteGrid(grid); err != nil {
					return err
				}
				fmt.Fprintf(w, "wrote %s (one row per caption)\n", grid)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Prompts, "prompts", "", "prompts file (text_embeddings, text_mask, captions); default the job's")
	f.IntVar(&req.Steps, "steps", 0, "Euler steps (default sample.num_steps)")
	f.Float64Var(&req.Guidance, "guidance", 0, "classifier-free guidance scale (default sample.guidance_scale; 1 = none)")
	f.IntVar(&req.PerPrompt, "per-prompt", 0, "samples per prompt (default sample.per_prompt)")
	f.Uint64Var(&req.Seed, "seed", 0, "noise seed (default the job seed)")
	f.StringVar(&req.Weights, "weights", "", "ema or model (default ema when the checkpoint has it)")
	f.StringVar(&shape, "shape", "", "latent shape C,H,W or C,F,H,W (default the job dataset's)")
	f.StringVar(&out, "out", "", "latents file (default CHECKPOINT/samples.safetensors)")
	f.StringVar(&grid, "grid", "", "PNG grid for pixel-space data (default CHECKPOINT/samples.png)")
	f.StringVar(&device, "device", "cpu", "cpu, cuda or auto")
	return cmd
}
