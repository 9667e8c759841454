// Package sample draws images (or video latents) from a trained velocity
// model: Euler steps of the learned flow from pure noise at σ = 1 to data at
// σ = 0, on the flow-shifted σ schedule, with classifier-free guidance whose
// unconditional branch is zeroed text — the input text dropout trained.
// Results are written as safetensors latents and, for pixel-space data, as a
// PNG grid with one row per caption.
//
// Functions are safe for concurrent use with different Nets.
package sample

import (
	"context"
	"fmt"

	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/flow"
	"github.com/fmtrain/fmtrain/train"
)

// Options steer the integration.
type Options struct {
	// Steps is the number of Euler steps.
	Steps int
	// Guidance is the classifier-free guidance scale: v = v_u + g·(v_c − v_u);
	// 1 uses the conditional velocity alone (no unconditional pass).
	Guidance float64
	// FlowShift s warps the uniform grid u ∈ [1, 0] to σ = s·u/(1 + (s−1)·u),
	// the shift training sampled σ with (flow_matching.flow_shift).
	FlowShift float64
	// NumTrainTimesteps scales σ to the model's timestep (t = σ·T).
	NumTrainTimesteps int
	// Seed draws the starting noise.
	Seed uint64
	// Adapter is the flow adapter the model was trained behind: "simple"
	// (no text mask reaches the model) or "hunyuan" (t2v: zero condition
	// channels appended, the text mask passed).
	Adapter string
}

// Sigmas is the σ grid of n Euler steps: n+1 values from 1 down to 0.
func Sigmas(n int, shift float64) []float64 {
	out := make([]float64, n+1)
	for i := range out {
		u := 1 - float64(i)/float64(n)
		out[i] = shift * u / (1 + (shift-1)*u)
	}
	out[n] = 0
	return out
}

// Euler samples perPrompt latents for each prompt. latentShape is one
// sample's [C,H,W] or [C,F,H,W]. The result holds
// len(p.Captions)·perPrompt samples, prompt-major.
func Euler(ctx context.Context, net train.Net, latentShape []int, p *data.Prompts, perPrompt int, o Options) ([]float32, error) {
	if o.Steps <= 0 || perPrompt <= 0 || o.NumTrainTimesteps <= 0 || !(o.FlowShift > 0) {
		return nil, fmt.Errorf("sample: need steps (%d), per-prompt count (%d), num_train_timesteps (%d) and flow_shift (%g) > 0",
			o.Steps, perPrompt, o.NumTrainTimesteps, o.FlowShift)
	}
	C, F, H, W, err := dims(latentShape)
	if err != nil {
		return nil, err
	}
	if net.OutChannels() != C {
		return nil, fmt.Errorf("sample: the model predicts %d channels, the latents have %d", net.OutChannels(), C)
	}
	n := len(p.Captions) * perPrompt
	vol := C * F * H * W
	guided := o.Guidance != 1
	rows := n
	if guided {
		rows = 2 * n // conditional rows, then unconditional rows
	}
	// Text: each prompt repeated perPrompt times; unconditional rows stay zero.
	row := p.S * p.Dt
	txt := make([]float32, rows*row)
	mask := make([]float32, rows*p.S)
	for k := 0; k < n; k++ {
		j := k / perPrompt
		copy(txt[k*row:], p.Text[j*row:(j+1)*row])
		copy(mask[k*p.S:], p.Mask[j*p.S:(j+1)*p.S])
	}
	in := train.Input{B: rows, C: C, F: F, H: H, W: W, Txt: txt, S: p.S, T: make([]float32, rows)}
	hunyuan := o.Adapter == "hunyuan"
	if hunyuan {
		in.Mask = mask
		in.C = 2*C + 1
	} else if o.Adapter != "simple" && o.Adapter != "" {
		return nil, fmt.Errorf("sample: adapter %q is not one FM-DiT runs behind (simple, hunyuan)", o.Adapter)
	}
	x := flow.NewRNG(o.Seed, 0).Randn(n * vol)
	in.X = make([]float32, rows*in.C*F*H*W)
	sig := Sigmas(o.Steps, o.FlowShift)
	for i := 0; i < o.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t := float32(sig[i] * float64(o.NumTrainTimesteps))
		for r := range in.T {
			in.T[r] = t
		}
		for r := 0; r < rows; r++ { // the same x_t for both branches
			k := r % n
			copy(in.X[r*in.C*F*H*W:], x[k*vol:(k+1)*vol]) // condition channels (hunyuan) stay zero
		}
		v, err := net.Forward(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("sample: step %d: %w", i, err)
		}
		dt := float32(sig[i+1] - sig[i])
		g := float32(o.Guidance)
		for k := 0; k < n*vol; k++ {
			vk := v[k]
			if guided {
				vu := v[n*vol+k]
				vk = vu + g*(vk-vu)
			}
			x[k] += dt * vk
		}
	}
	return x, nil
}

func dims(shape []int) (C, F, H, W int, err error) {
	switch len(shape) {
	case 3:
		return shape[0], 1, shape[1], shape[2], nil
	case 4:
		return shape[0], shape[1], shape[2], shape[3], nil
	}
	return 0, 0, 0, 0, fmt.Errorf("sample: latent shape %v; want [C,H,W] or [C,F,H,W]", shape)
}
