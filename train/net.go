package train

import (
	"context"
	"fmt"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/flow"
)

// Input is one forward call of a velocity network: latents X
// [B,C,F,H,W] (images have F = 1), timesteps T [B] on the pipeline's
// [0, num_train_timesteps] scale, text Txt [B,S,Dt] and an optional text mask
// [B,S] (nil: all tokens kept).
type Input struct {
	X             []float32
	B, C, F, H, W int
	T             []float32
	Txt           []float32
	S             int
	Mask          []float32
}

// Net is a velocity network with explicit backward over flat parameter and
// gradient buffers — what the loop trains. FM-DiT (package model) is the
// one fmtrain ships; tests use small ones.
type Net interface {
	// Params and Grads are the flat buffers (same layout, Layout's order).
	Params() []float32
	Grads() []float32
	// Layout names every tensor of the flat buffers (checkpoints use it).
	Layout() []checkpoint.Param
	// Forward returns the velocity [B,OutChannels,F,H,W] and keeps what
	// Backward needs.
	Forward(ctx context.Context, in Input) ([]float32, error)
	// Backward accumulates into Grads the gradient of a loss whose gradient
	// with respect to the last Forward's output is dOut.
	Backward(ctx context.Context, dOut []float32) error
	ZeroGrad()
	// SetGradReadyHook registers f (nil: none) to be called during Backward
	// for each contiguous range of Grads that is final.
	SetGradReadyHook(f func(lo, hi int))
	// OutChannels is the channel count of the velocity.
	OutChannels() int
	// ConfigJSON is the network's config, stored in checkpoints.
	ConfigJSON() ([]byte, error)
}

// FlowModel makes a Net a flow.Model for the "simple" adapter (keyword
// arguments hidden_states, timestep, encoder_hidden_states) and the
// "hunyuan" adapter (latents and timesteps positional; encoder_hidden_states
// and encoder_attention_mask keyword). The Net keeps the activations of the
// call, so the trainer can run Backward after flow's Step.
type FlowModel struct{ Net Net }

var _ flow.Model = FlowModel{}

// Forward implements flow.Model.
func (m FlowModel) Forward(ctx context.Context, call *flow.ModelCall) ([]*flow.Tensor, error) {
	x, t := call.Tensor("hidden_states"), call.Tensor("timestep")
	if len(call.Args) >= 2 { // hunyuan
		x, _ = call.Args[0].(*flow.Tensor)
		t, _ = call.Args[1].(*flow.Tensor)
	}
	txt := call.Tensor("encoder_hidden_states")
	if x == nil || t == nil || txt == nil {
		return nil, fmt.Errorf("train: the model needs latents, timesteps and encoder_hidden_states (simple or hunyuan adapter)")
	}
	in := Input{X: x.Data, T: t.Data, Txt: txt.Data}
	switch x.Rank() {
	case 4:
		in.B, in.C, in.F, in.H, in.W = x.Shape[0], x.Shape[1], 1, x.Shape[2], x.Shape[3]
	case 5:
		in.B, in.C, in.F, in.H, in.W = x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], x.Shape[4]
	default:
		return nil, fmt.Errorf("train: latents of shape %v; want [B,C,H,W] or [B,C,F,H,W]", x.Shape)
	}
	if txt.Rank() != 3 || txt.Shape[0] != in.B || len(t.Data) != in.B {
		return nil, fmt.Errorf("train: text %v and timesteps %v do not match a batch of %d", txt.Shape, t.Shape, in.B)
	}
	in.S = txt.Shape[1]
	if mt := call.Tensor("encoder_attention_mask"); mt != nil {
		in.Mask = mt.Float32s()
	}
	out, err := m.Net.Forward(ctx, in)
	if err != nil {
		return nil, err
	}
	shape := append([]int(nil), x.Shape...)
	shape[1] = m.Net.OutChannels()
	return []*flow.Tensor{flow.FromFloat32(flow.Float32, out, shape...)}, nil
}
