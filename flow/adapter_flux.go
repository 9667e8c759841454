package flow

import (
	"context"
	"fmt"
)

// FluxAdapter is NeMo's FluxAdapter (FLUX.1): 2×2-packed tokens, T5 text,
// pooled CLIP projections (zeros [B,768] when absent), per-sample CFG
// dropout of text and pooled embeddings, img_ids [(H/2)(W/2),3] without a
// batch dim, txt_ids zeros [B,L,3], timestep t.to(dtype)/1000 and guidance
// float32 — always passed: NeMo stores use_guidance_embeds but never reads it.
type FluxAdapter struct {
	GuidanceScale     float64 // default 3.5
	UseGuidanceEmbeds bool    // default true; unused, as in NeMo
}

var (
	_ ModelAdapter = (*FluxAdapter)(nil)
	_ OutputGrad   = (*FluxAdapter)(nil)
)

func newFluxAdapter(m map[string]any) (ModelAdapter, error) {
	k := newKwargs(m)
	a := &FluxAdapter{GuidanceScale: k.float("guidance_scale", 3.5), UseGuidanceEmbeds: k.bool("use_guidance_embeds", true)}
	return a, k.done()
}

// PrepareInputs implements ModelAdapter.
func (a *FluxAdapter) PrepareInputs(c *Context) (Inputs, error) {
	xt := c.NoisyLatents
	if xt.Rank() != 4 {
		return nil, fmt.Errorf("flux: FluxAdapter expects 4D latents [B,C,H,W], got shape %v", xt.Shape)
	}
	B, C, H, W := xt.Shape[0], xt.Shape[1], xt.Shape[2], xt.Shape[3]
	if H%2 != 0 || W%2 != 0 {
		return nil, fmt.Errorf("flux: latent height and width must be even for 2x2 packing, got %dx%d", H, W)
	}
	text, err := textEmbeddings(c.Batch, "text_embeddings", c.DType, true)
	if err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	var pooled *Tensor
	for _, key := range []string{"pooled_prompt_embeds", "clip_pooled"} {
		if t := c.Batch.Tensor(key); t != nil {
			pooled = t.To(c.DType)
			if pooled.Rank() == 1 {
				pooled.Shape = []int{1, pooled.Shape[0]}
			}
			break
		}
	}
	if pooled == nil {
		pooled = NewTensor(c.DType, B, 768)
	}
	if c.CFGDropoutProb > 0 {
		r := c.RNG.Rand(B)
		p := float32(c.CFGDropoutProb)
		for b := range B {
			if r[b] < p {
				zeroSample(text, b)
				zeroSample(pooled, b)
			}
		}
	}
	h2, w2 := H/2, W/2
	imgIDs := NewTensor(c.DType, h2*w2, 3)
	for i := range h2 {
		for j := range w2 {
			imgIDs.Data[(i*w2+j)*3+1] = RoundTo(c.DType, float32(i))
			imgIDs.Data[(i*w2+j)*3+2] = RoundTo(c.DType, float32(j))
		}
	}
	guidance := NewTensor(Float32, B)
	for b := range guidance.Data {
		guidance.Data[b] = float32(a.GuidanceScale)
	}
	return Inputs{
		"hidden_states":         pack2x2(xt),
		"encoder_hidden_states": text,
		"pooled_projections":    pooled,
		"timestep":              castTimestepsDiv1000(c.Timesteps, c.DType),
		"img_ids":               imgIDs,
		"txt_ids":               NewTensor(c.DType, B, text.Shape[1], 3),
		"guidance":              guidance,
		"_original_shape":       []int{B, C, H, W},
	}, nil
}

// zeroSample zeroes sample b of t (dim 0), if t has that many samples.
func zeroSample(t *Tensor, b int) {
	if b >= t.Shape[0] {
		return
	}
	per := t.Numel() / t.Shape[0]
	clear(t.Data[b*per : (b+1)*per])
}

// Forward implements ModelAdapter: it pops _original_shape and unpacks.
func (a *FluxAdapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	shape, ok := in["_original_shape"].([]int)
	if !ok || len(shape) != 4 {
		return nil, nil, fmt.Errorf("flux: inputs lack _original_shape")
	}
	delete(in, "_original_shape")
	out, err := callModel(ctx, model, nil, publicKwargs(in))
	if err != nil {
		return nil, nil, fmt.Errorf("flux: %w", err)
	}
	B, C, H, W := shape[0], shape[1], shape[2], shape[3]
	tok := postProcess(out)
	if err := checkOutputShape(tok, []int{B, (H / 2) * (W / 2), 4 * C}, "[0]"); err != nil {
		return nil, nil, fmt.Errorf("flux: %w", err)
	}
	return unpack2x2(tok, C, H, W), out, nil
}

// ModelOutputGrad implements OutputGrad: the output tokens' gradient is the
// packed prediction gradient.
func (a *FluxAdapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	g := make([]*Tensor, len(outputs))
	g[0] = pack2x2(dPred)
	return g, nil
}

// Flux2Adapter is NeMo's Flux2Adapter (FLUX.2-dev): latents arrive
// patchified [B,128,Hp,Wp]; tokens flatten the spatial dims; 4-axis int64
// ids; per-sample CFG dropout with a [B,1,1] draw; guidance only with
// use_guidance_embeds.
type Flux2Adapter struct {
	GuidanceScale     float64 // default 3.5
	UseGuidanceEmbeds bool    // default true
}

var (
	_ ModelAdapter = (*Flux2Adapter)(nil)
	_ OutputGrad   = (*Flux2Adapter)(nil)
)

func newFlux2Adapter(m map[string]any) (ModelAdapter, error) {
	k := newKwargs(m)
	a := &Flux2Adapter{GuidanceScale: k.float("guidance_scale", 3.5), UseGuidanceEmbeds: k.bool("use_guidance_embeds", true)}
	return a, k.done()
}

// PrepareInputs implements ModelAdapter.
func (a *Flux2Adapter) PrepareInputs(c *Context) (Inputs, error) {
	xt := c.NoisyLatents
	if xt.Rank() != 4 {
		return nil, fmt.Errorf("flux2: Flux2Adapter expects 4D latents [B,C,Hp,Wp], got shape %v", xt.Shape)
	}
	B, Hp, Wp := xt.Shape[0], xt.Shape[2], xt.Shape[3]
	text, err := textEmbeddings(c.Batch, "text_embeddings", c.DType, false)
	if err != nil {
		return nil, fmt.Errorf("flux2: %w", err)
	}
	if text.Rank() != 3 {
		return nil, fmt.Errorf("flux2: text_embeddings must be [B,L,D], got shape %v", text.Shape)
	}
	if c.CFGDropoutProb > 0 {
		r := c.RNG.Rand(B) // torch.rand(B,1,1)
		p := float32(c.CFGDropoutProb)
		for b := range B {
			if r[b] < p {
				zeroSample(text, b)
			}
		}
	}
	L := text.Shape[1]
	imgIDs := NewTensor(Int64, B, Hp*Wp, 4)
	for b := range B {
		for h := range Hp {
			for w := range Wp {
				row := imgIDs.Ints[((b*Hp*Wp)+h*Wp+w)*4:]
				row[1], row[2] = int64(h), int64(w)
			}
		}
	}
	txtIDs := NewTensor(Int64, B, L, 4)
	for b := range B {
		for l := range L {
			txtIDs.Ints[(b*L+l)*4+3] = int64(l)
		}
	}
	var guidance any
	if a.UseGuidanceEmbeds {
		g := NewTensor(Float32, B)
		for b := range g.Data {
			g.Data[b] = float32(a.GuidanceScale)
		}
		guidance = g
	}
	return Inputs{
		"hidden_states":         flattenSpatial(xt),
		"encoder_hidden_states": text,
		"timestep":              castTimestepsDiv1000(c.Timesteps, c.DType),
		"img_ids":               imgIDs,
		"txt_ids":               txtIDs,
		"guidance":              guidance,
		"_h_p":                  Hp,
		"_w_p":                  Wp,
	}, nil
}

// Forward implements ModelAdapter: it pops _h_p/_w_p and unflattens.
func (a *Flux2Adapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	Hp, ok1 := in["_h_p"].(int)
	Wp, ok2 := in["_w_p"].(int)
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("flux2: inputs lack _h_p/_w_p")
	}
	delete(in, "_h_p")
	delete(in, "_w_p")
	out, err := callModel(ctx, model, nil, publicKwargs(in))
	if err != nil {
		return nil, nil, fmt.Errorf("flux2: %w", err)
	}
	tok := postProcess(out)
	if tok.Rank() != 3 || tok.Shape[1] != Hp*Wp {
		return nil, nil, fmt.Errorf("flux2: model output [0] has shape %v, want [B,%d,C]", tok.Shape, Hp*Wp)
	}
	return unflattenSpatial(tok, []int{Hp, Wp}), out, nil
}

// ModelOutputGrad implements OutputGrad.
func (a *Flux2Adapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	g := make([]*Tensor, len(outputs))
	g[0] = flattenSpatial(dPred)
	return g, nil
}
