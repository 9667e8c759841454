// Package data is fmtrain's dataset: a JSON manifest listing safetensors
// shards of precomputed latents, text embeddings and text masks
// (docs/data.md), a reader that validates every shard up front and reads
// samples by offset, the deterministic sample order (a per-epoch shuffle from
// the job seed) and the assignment of samples to ranks by global position, so
// a generation with another world size neither repeats nor skips a sample.
//
// A Dataset is safe for concurrent use; an Order is a plain value.
package data

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Manifest format identifiers.
const (
	ManifestFormat  = "fmtrain-dataset"
	ManifestVersion = 1
)

// Tensor names inside a shard.
const (
	KeyLatents        = "latents"
	KeyTextEmbeddings = "text_embeddings"
	KeyTextMask       = "text_mask"
	// MetaCaptions is the shard metadata key holding a JSON array of the
	// samples' captions (optional).
	MetaCaptions = "captions"
)

// Manifest describes a dataset. Shard paths are relative to the manifest's
// directory (or absolute).
type Manifest struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// DataType is "image" (latents [n,C,H,W]) or "video" ([n,C,F,H,W]).
	DataType string `json:"data_type"`
	// LatentShape is one sample's latent shape: [C,H,W] or [C,F,H,W].
	LatentShape []int `json:"latent_shape"`
	// TextLen (S) and TextDim (Dt) shape one sample's text embeddings.
	TextLen int `json:"text_len"`
	TextDim int `json:"text_dim"`
	// PixelSpace marks latents that are images in [-1,1] (channels RGB),
	// which sampling can write as PNG.
	PixelSpace bool    `json:"pixel_space,omitempty"`
	Shards     []Shard `json:"shards"`
	// Prompts optionally names a safetensors file of text embeddings to
	// sample for (see sample.LoadPrompts).
	Prompts string `json:"prompts,omitempty"`
}

// Shard is one safetensors file of the dataset.
type Shard struct {
	Path       string `json:"path"`
	NumSamples int    `json:"num_samples"`
	// Bytes and SHA256 let a reader detect truncated or corrupt shards.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// NumSamples is the total number of samples.
func (m *Manifest) NumSamples() int {
	n := 0
	for _, s := range m.Shards {
		n += s.NumSamples
	}
	return n
}

// ReadManifest reads and validates a manifest file.
func ReadManifest(path string) (*Manifest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data: reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("data: manifest %s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("data: manifest %s: %w", path, err)
	}
	return &m, nil
}

// Validate checks the manifest's own fields (not the shards).
func (m *Manifest) Validate() error {
	switch {
	case m.Format != ManifestFormat:
		return fmt.Errorf("format (%q) must be %q", m.Format, ManifestFormat)
	case m.Version != ManifestVersion:
		return fmt.Errorf("version (%d) is not supported (want %d)", m.Version, ManifestVersion)
	case m.DataType == "image" && len(m.LatentShape) != 3:
		return fmt.Errorf("latent_shape (%v) must be [C,H,W] for data_type image", m.LatentShape)
	case m.DataType == "video" && len(m.LatentShape) != 4:
		return fmt.Errorf("latent_shape (%v) must be [C,F,H,W] for data_type video", m.LatentShape)
	case m.DataType != "image" && m.DataType != "video":
		return fmt.Errorf("data_type (%q) must be \"image\" or \"video\"", m.DataType)
	case m.TextLen <= 0 || m.TextDim <= 0:
		return fmt.Errorf("text_len (%d) and text_dim (%d) must be > 0", m.TextLen, m.TextDim)
	case len(m.Shards) == 0:
		return fmt.Errorf("shards is empty")
	}
	for _, d := range m.LatentShape {
		if d <= 0 {
			return fmt.Errorf("latent_shape (%v) has a dimension <= 0", m.LatentShape)
		}
	}
	for i, s := range m.Shards {
		if s.Path == "" || s.NumSamples <= 0 {
			return fmt.Errorf("shards[%d] needs a path and num_samples > 0 (got %q, %d)", i, s.Path, s.NumSamples)
		}
	}
	return nil
}

// WriteManifest writes m as indented JSON at path.
func WriteManifest(path string, m *Manifest) error {
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("data: encoding manifest: %w", err)
	}
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("data: writing manifest: %w", err)
	}
	return nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
