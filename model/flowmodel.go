package model

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fmtrain/fmtrain/flow"
)

// FlowModel makes a Model the velocity network behind flow's "simple" and
// "hunyuan" adapters (flow.Model). It reads the latents from
// Kwargs["hidden_states"] (simple) or Args[0] (hunyuan, where they carry the
// 2C+1 condition channels: build the model with in_channels = 2C+1 and
// out_channels = C), the timesteps from Kwargs["timestep"] or Args[1], the
// text from Kwargs["encoder_hidden_states"] and the optional mask from
// Kwargs["encoder_attention_mask"]. Other keyword arguments (image_embeds,
// attention_kwargs, …) are not used by FM-DiT. Latents of rank 4 are images
// [B,C,H,W] (F=1), rank 5 video [B,C,F,H,W]; the output has the same layout
// with out_channels channels, in float32.
//
// The returned tensor's data is the model's output buffer: valid until the
// next Forward. Used by one goroutine at a time, like the Model.
type FlowModel struct {
	Model *Model
}

var _ flow.Model = (*FlowModel)(nil)

func tensorArg(call *flow.ModelCall, name string, pos int) *flow.Tensor {
	if t := call.Tensor(name); t != nil {
		return t
	}
	if pos < len(call.Args) {
		t, _ := call.Args[pos].(*flow.Tensor)
		return t
	}
	return nil
}

// Forward implements flow.Model.
func (f *FlowModel) Forward(ctx context.Context, call *flow.ModelCall) ([]*flow.Tensor, error) {
	x := tensorArg(call, "hidden_states", 0)
	if x == nil {
		x = call.Tensor("latents")
	}
	t := tensorArg(call, "timestep", 1)
	if t == nil {
		t = call.Tensor("timesteps")
	}
	txt := call.Tensor("encoder_hidden_states")
	switch {
	case x == nil:
		return nil, errors.New("model: no latents (hidden_states or first positional argument)")
	case t == nil:
		return nil, errors.New("model: no timesteps (timestep or second positional argument)")
	case txt == nil:
		return nil, errors.New("model: no encoder_hidden_states")
	case len(txt.Shape) != 3:
		return nil, fmt.Errorf("model: encoder_hidden_states has shape %v, want [B,S,text_dim]", txt.Shape)
	}
	in := Input{X: x.Data, T: t.Data, Txt: txt.Data, S: txt.Shape[1]}
	switch len(x.Shape) {
	case 4:
		in.B, in.F, in.H, in.W = x.Shape[0], 1, x.Shape[2], x.Shape[3]
	case 5:
		in.B, in.F, in.H, in.W = x.Shape[0], x.Shape[2], x.Shape[3], x.Shape[4]
	default:
		return nil, fmt.Errorf("model: latents have shape %v, want [B,C,H,W] or [B,C,F,H,W]", x.Shape)
	}
	if x.Shape[1] != f.Model.cfg.InChannels {
		return nil, fmt.Errorf("model: latents have %d channels, in_channels is %d", x.Shape[1], f.Model.cfg.InChannels)
	}
	if m := call.Tensor("encoder_attention_mask"); m != nil {
		if m.Data != nil {
			in.Mask = m.Data
		} else {
			in.Mask = make([]float32, len(m.Ints))
			for i, v := range m.Ints {
				if v != 0 {
					in.Mask[i] = 1
				}
			}
		}
	}
	out, err := f.Model.Forward(ctx, in)
	if err != nil {
		return nil, err
	}
	shape := slices.Clone(x.Shape)
	shape[1] = f.Model.cfg.OutChannels
	return []*flow.Tensor{{Shape: shape, DType: flow.Float32, Data: out}}, nil
}

// Backward runs the model's backward from the pipeline's gradient with
// respect to the model outputs (flow.StepResult.DModelOutputs).
func (f *FlowModel) Backward(ctx context.Context, dOutputs []*flow.Tensor) error {
	if len(dOutputs) == 0 || dOutputs[0] == nil {
		return errors.New("model: no gradient for the model output")
	}
	return f.Model.Backward(ctx, dOutputs[0].Data)
}
