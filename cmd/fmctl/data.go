package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/data"
)

// newDataCmd is `fmctl data`: dataset tools.
func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Dataset tools: make the demo dataset, verify a dataset",
	}
	cmd.AddCommand(newDataSynthCmd(), newDataVerifyCmd())
	return cmd
}

func newDataSynthCmd() *cobra.Command {
	var o data.SynthOptions
	cmd := &cobra.Command{
		Use:   "synth DIR",
		Short: "Write the demo dataset: coloured shapes with caption embeddings",
		Long: `Writes DIR/manifest.json, safetensors shards of pixel-space RGB images in [-1,1]
(a circle, square, triangle or cross in one of six colours on black) with
text embeddings that encode the caption "a <colour> <shape>" deterministically,
and DIR/prompts.safetensors (every shape in two colours) for sample grids.
The format is docs/data.md's.`,
		Example: `  fmctl data synth data/shapes
  fmctl data synth data/big --samples 16384 --shards 8 --size 32`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := data.Synth(args[0], o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d samples %v in %d shards, manifest %s\n",
				m.NumSamples(), m.LatentShape, len(m.Shards), filepath.Join(args[0], data.SynthManifestName))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.NumSamples, "samples", 4096, "number of images")
	f.IntVar(&o.NumShards, "shards", 4, "number of shard files")
	f.IntVar(&o.Size, "size", 16, "image edge in pixels")
	f.IntVar(&o.TextLen, "text-len", 4, "tokens per caption embedding (S)")
	f.IntVar(&o.TextDim, "text-dim", 32, "embedding width (Dt); the model's text_dim")
	f.Uint64Var(&o.Seed, "seed", 0, "seed of the shapes' positions, sizes, colours")
	return cmd
}

func newDataVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify MANIFEST",
		Short: "Check every shard of a dataset: size, header, shapes and sha256",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := data.Open(args[0], data.OpenOptions{Verify: true})
			if err != nil {
				return err
			}
			defer ds.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d samples in %d shards, latents %v, text %d×%d\n",
				ds.Len(), len(ds.Manifest.Shards), ds.Manifest.LatentShape, ds.Manifest.TextLen, ds.Manifest.TextDim)
			return nil
		},
	}
}
