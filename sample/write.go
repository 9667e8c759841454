package sample

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/safetensors"
	"github.com/fmtrain/fmtrain/viz"
)

// WriteLatents writes samples [n, latentShape…] as a safetensors file with a
// "latents" tensor and each sample's caption in the metadata (like a dataset
// shard without text), for decoding with the VAE in Python.
func WriteLatents(path string, latents []float32, latentShape []int, captions []string) error {
	n := len(captions)
	t, err := safetensors.FromFloat32(data.KeyLatents, safetensors.F32, append([]int{n}, latentShape...), latents)
	if err != nil {
		return fmt.Errorf("sample: %s: %w", path, err)
	}
	caps, err := json.Marshal(captions)
	if err != nil {
		return fmt.Errorf("sample: %s: %w", path, err)
	}
	meta := map[string]string{data.MetaCaptions: string(caps)}
	return safetensors.WriteFile(path, []safetensors.Tensor{t}, meta)
}

// WriteGrid writes pixel-space samples (RGB [3,H,W] in [-1,1]) as a PNG grid:
// one row per prompt, perPrompt images per row, captions as row labels.
func WriteGrid(path string, latents []float32, latentShape []int, captions []string, perPrompt int) error {
	if len(latentShape) != 3 || latentShape[0] != 3 {
		return fmt.Errorf("sample: a PNG grid needs RGB pixel latents [3,H,W], not %v", latentShape)
	}
	n := len(captions) * perPrompt
	return viz.SavePNG(path, func(w io.Writer) error {
		return viz.Grid(w, latents, n, latentShape[1], latentShape[2],
			viz.GridOptions{Cols: perPrompt, Scale: 4, Labels: captions})
	})
}

// Repeat lists each caption perPrompt times (the captions of Euler's output).
func Repeat(captions []string, perPrompt int) []string {
	out := make([]string, 0, len(captions)*perPrompt)
	for _, c := range captions {
		for i := 0; i < perPrompt; i++ {
			out = append(out, c)
		}
	}
	return out
}
