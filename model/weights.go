package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/fmtrain/fmtrain/safetensors"
)

// InitDiT fills the parameters with DiT's training initialisation
// (fm-dit.md): Xavier-uniform linear weights (patch embed on its flattened
// form), zero biases, t_embedder weights N(0, 0.02), and zero for every
// adaLN_modulation and final_layer.linear, so the untrained model outputs
// zeros. The same seed gives the same weights on every machine.
func (m *Model) InitDiT(seed uint64) { InitDiT(m.cfg, m.params, seed) }

// InitDiT fills params (laid out by ParamTable(c)) as Model.InitDiT does.
func InitDiT(c Config, params []float32, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x46d2d17)) // second word: fixed, FM-DiT's stream
	for _, p := range ParamTable(c) {
		v := params[p.Offset : p.Offset+p.Size]
		switch {
		case len(p.Shape) == 1, strings.Contains(p.Name, "adaLN_modulation"), strings.HasPrefix(p.Name, "final_layer.linear"):
			clear(v)
		case strings.HasPrefix(p.Name, "t_embedder."):
			for i := range v {
				v[i] = float32(0.02 * r.NormFloat64())
			}
		default:
			fanOut, fanIn := p.Shape[0], p.Shape[1]
			bound := math.Sqrt(6 / float64(fanIn+fanOut))
			for i := range v {
				v[i] = float32(bound * (2*r.Float64() - 1))
			}
		}
	}
}

// MetadataConfig is the safetensors metadata key holding the model config
// as JSON (the key the reference vectors use).
const MetadataConfig = "config"

// Tensors returns params (laid out by ParamTable(c)) as F32 tensors named
// as fm-dit.md's parameter table, for embedding in a checkpoint file.
func Tensors(c Config, params []float32) ([]safetensors.Tensor, error) {
	if n := NumParams(c); len(params) != n {
		return nil, fmt.Errorf("model: %d parameters, config needs %d", len(params), n)
	}
	table := ParamTable(c)
	out := make([]safetensors.Tensor, len(table))
	for i, p := range table {
		t, err := safetensors.FromFloat32(p.Name, safetensors.F32, p.Shape, params[p.Offset:p.Offset+p.Size])
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		out[i] = t
	}
	return out, nil
}

// Save writes params as a safetensors file with fm-dit.md's names, the
// config as JSON under the "config" metadata key, and extra metadata
// (which must not use that key). The file opens in Python's safetensors.
func Save(path string, c Config, params []float32, extra map[string]string) error {
	tensors, err := Tensors(c, params)
	if err != nil {
		return err
	}
	meta := map[string]string{}
	for k, v := range extra {
		if k == MetadataConfig {
			return fmt.Errorf("model: metadata key %q is reserved for the config", k)
		}
		meta[k] = v
	}
	js, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("model: encoding config: %w", err)
	}
	meta[MetadataConfig] = string(js)
	if err := safetensors.WriteFile(path, tensors, meta); err != nil {
		return fmt.Errorf("model: saving weights: %w", err)
	}
	return nil
}

// ConfigFromMetadata parses the "config" metadata entry.
func ConfigFromMetadata(meta map[string]string) (Config, error) {
	js, ok := meta[MetadataConfig]
	if !ok {
		return Config{}, fmt.Errorf("model: no %q entry in the safetensors metadata", MetadataConfig)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("model: metadata config %s: %w", js, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ReadParams copies every parameter of c from f into dst (laid out by
// ParamTable(c)), converting F16/BF16 to float32. A missing tensor or a
// wrong shape is an error naming it; tensors that are not parameters
// (inputs, gradients, optimizer state) are ignored.
func ReadParams(f *safetensors.File, c Config, dst []float32) error {
	if n := NumParams(c); len(dst) != n {
		return fmt.Errorf("model: destination has %d elements, config needs %d", len(dst), n)
	}
	for _, p := range ParamTable(c) {
		t, ok := f.Tensor(p.Name)
		if !ok {
			return fmt.Errorf("model: parameter %s missing", p.Name)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return fmt.Errorf("model: parameter %s has shape %v, config needs %v", p.Name, t.Shape, p.Shape)
		}
		v, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("model: parameter %s: %w", p.Name, err)
		}
		copy(dst[p.Offset:p.Offset+p.Size], v)
	}
	return nil
}

// Load reads a weights file written by Save (or any safetensors file with
// the parameter names and a "config" metadata entry): its config, its
// parameters laid out by ParamTable, and its metadata.
func Load(path string) (Config, []float32, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return Config{}, nil, nil, fmt.Errorf("model: loading weights: %w", err)
	}
	c, err := ConfigFromMetadata(f.Metadata)
	if err != nil {
		return Config{}, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	params := make([]float32, NumParams(c))
	if err := ReadParams(f, c, params); err != nil {
		return Config{}, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, params, f.Metadata, nil
}
