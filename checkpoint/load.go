package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/fmtrain/fmtrain/safetensors"
)

// Load reads and verifies the checkpoint at path (a step directory) into a
// State whose buffers follow layout, the current model's parameter table.
// A missing tensor, a shape that differs from layout, or any damaged file
// is an error naming the file.
func Load(path string, layout []Param) (*State, error) {
	h, err := ReadHeader(path)
	if err != nil {
		return nil, err
	}
	st := &State{Step: h.Step, DataPosition: h.DataPosition, Epoch: h.Epoch, Seed: h.Seed,
		Spec: []byte(h.Spec), Layout: layout, AdamStep: h.AdamStep}
	if len(h.ModelConfig) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, h.ModelConfig); err != nil {
			return nil, fmt.Errorf("checkpoint: %s: model_config: %w", filepath.Join(path, HeaderFile), err)
		}
		st.ModelConfig = b.Bytes()
	}
	fi, ok := h.Files[WeightsFile]
	if !ok {
		return nil, fmt.Errorf("checkpoint: %s lists no %s", filepath.Join(path, HeaderFile), WeightsFile)
	}
	if st.Params, err = loadNamed(path, WeightsFile, fi, layout); err != nil {
		return nil, err
	}
	if fi, ok := h.Files[EMAFile]; ok {
		if st.EMA, err = loadNamed(path, EMAFile, fi, layout); err != nil {
			return nil, err
		}
	}
	if fi, ok := h.Files[OptimizerFile]; ok {
		raw, err := readVerified(path, OptimizerFile, fi)
		if err != nil {
			return nil, err
		}
		fp := filepath.Join(path, OptimizerFile)
		f, err := safetensors.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %s: %w", fp, err)
		}
		if st.AdamM, _, err = f.Float32s("exp_avg"); err != nil {
			return nil, fmt.Errorf("checkpoint: %s: %w", fp, err)
		}
		if st.AdamV, _, err = f.Float32s("exp_avg_sq"); err != nil {
			return nil, fmt.Errorf("checkpoint: %s: %w", fp, err)
		}
		if len(st.AdamM) != len(st.Params) || len(st.AdamV) != len(st.Params) {
			return nil, fmt.Errorf("checkpoint: %s holds moments of %d values for a model of %d", fp, len(st.AdamM), len(st.Params))
		}
	}
	return st, nil
}

func loadNamed(path, name string, fi FileInfo, layout []Param) ([]float32, error) {
	raw, err := readVerified(path, name, fi)
	if err != nil {
		return nil, err
	}
	fp := filepath.Join(path, name)
	f, err := safetensors.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", fp, err)
	}
	return gather(f, fp, layout)
}

// ReadWeights reads a weights file (a checkpoint's model.safetensors or
// ema.safetensors, or one written from Python with the same names) into a
// flat buffer following layout. Unlike Load it has no header to verify
// against, so it relies on the safetensors reader's own checks.
func ReadWeights(file string, layout []Param) ([]float32, error) {
	f, err := safetensors.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return gather(f, file, layout)
}

func gather(f *safetensors.File, fp string, layout []Param) ([]float32, error) {
	total := 0
	for _, p := range layout {
		total += p.Size()
	}
	buf := make([]float32, total)
	for _, p := range layout {
		v, shape, err := f.Float32s(p.Name)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %s does not fit this model: %w", fp, err)
		}
		if !slices.Equal(shape, p.Shape) {
			return nil, fmt.Errorf("checkpoint: %s: tensor %q has shape %v, the model needs %v", fp, p.Name, shape, p.Shape)
		}
		copy(buf[p.Offset:], v)
	}
	if n := len(f.Tensors); n != len(layout) {
		return nil, fmt.Errorf("checkpoint: %s holds %d tensors, the model has %d", fp, n, len(layout))
	}
	return buf, nil
}
