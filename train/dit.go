package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/jobspec"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/model"
)

// DiT is FM-DiT (package model) as a Net.
type DiT struct {
	M      *model.Model
	layout []checkpoint.Param
}

var _ Net = (*DiT)(nil)

// NewDiT builds FM-DiT with DiT initialisation from seed.
func NewDiT(cfg model.Config, be kernels.Backend, seed uint64) (*DiT, error) {
	m, err := model.New(cfg, be)
	if err != nil {
		return nil, err
	}
	m.InitDiT(seed)
	return wrap(m), nil
}

func wrap(m *model.Model) *DiT {
	table := model.ParamTable(m.Config())
	layout := make([]checkpoint.Param, len(table))
	for i, p := range table {
		layout[i] = checkpoint.Param{Name: p.Name, Shape: p.Shape, Offset: p.Offset}
	}
	return &DiT{M: m, layout: layout}
}

// LoadDiT builds FM-DiT from a checkpoint directory (its config and weights,
// or its EMA weights with ema) or from a weights file carrying its config
// in the "config" metadata (model.Save's format, also written from Python).
func LoadDiT(path string, be kernels.Backend, ema bool) (*DiT, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("train: model: %w", err)
	}
	if !st.IsDir() {
		cfg, params, _, err := model.Load(path)
		if err != nil {
			return nil, err
		}
		return fromWeights(cfg, be, params)
	}
	h, err := checkpoint.Verify(path)
	if err != nil {
		return nil, err
	}
	var cfg model.Config
	if err := json.Unmarshal(h.ModelConfig, &cfg); err != nil {
		return nil, fmt.Errorf("train: %s: model_config: %w", filepath.Join(path, checkpoint.HeaderFile), err)
	}
	file := checkpoint.WeightsFile
	if ema {
		if _, ok := h.Files[checkpoint.EMAFile]; !ok {
			return nil, fmt.Errorf("train: %s has no EMA weights (the run had ema.decay 0)", path)
		}
		file = checkpoint.EMAFile
	}
	d, err := fromWeights(cfg, be, nil)
	if err != nil {
		return nil, err
	}
	params, err := checkpoint.ReadWeights(filepath.Join(path, file), d.layout)
	if err != nil {
		return nil, err
	}
	copy(d.M.Params(), params)
	return d, nil
}

func fromWeights(cfg model.Config, be kernels.Backend, params []float32) (*DiT, error) {
	m, err := model.New(cfg, be)
	if err != nil {
		return nil, err
	}
	copy(m.Params(), params)
	return wrap(m), nil
}

// BuildNet makes the job's model: model.from_checkpoint's weights, or a
// fresh FM-DiT initialised from the job seed.
func BuildNet(s *jobspec.Spec, be kernels.Backend) (*DiT, error) {
	if s.Model.FromCheckpoint != "" {
		return LoadDiT(s.Model.FromCheckpoint, be, false)
	}
	return NewDiT(s.Model.DiT, be, s.Seed)
}

// Backend is the kernels backend the model runs on (the trainer looks for
// optional device capabilities on it).
func (d *DiT) Backend() kernels.Backend { return d.M.Backend() }

// Params implements Net.
func (d *DiT) Params() []float32 { return d.M.Params() }

// Grads implements Net.
func (d *DiT) Grads() []float32 { return d.M.Grads() }

// Layout implements Net.
func (d *DiT) Layout() []checkpoint.Param { return d.layout }

// ZeroGrad implements Net.
func (d *DiT) ZeroGrad() { d.M.ZeroGrad() }

// SetGradReadyHook implements Net.
func (d *DiT) SetGradReadyHook(f func(lo, hi int)) { d.M.SetGradReadyHook(f) }

// OutChannels implements Net.
func (d *DiT) OutChannels() int { return d.M.Config().OutChannels }

// ConfigJSON implements Net.
func (d *DiT) ConfigJSON() ([]byte, error) { return json.Marshal(d.M.Config()) }

// Forward implements Net.
func (d *DiT) Forward(ctx context.Context, in Input) ([]float32, error) {
	if c := d.M.Config().InChannels; in.C != c {
		return nil, fmt.Errorf("train: latents have %d channels, model.in_channels is %d", in.C, c)
	}
	return d.M.Forward(ctx, model.Input{X: in.X, B: in.B, F: in.F, H: in.H, W: in.W, T: in.T, Txt: in.Txt, S: in.S, Mask: in.Mask})
}

// Backward implements Net.
func (d *DiT) Backward(ctx context.Context, dOut []float32) error { return d.M.Backward(ctx, dOut) }
