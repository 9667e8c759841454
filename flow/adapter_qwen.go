package flow

import (
	"context"
	"fmt"
	"slices"
)

// QwenImageAdapter is NeMo's QwenImageAdapter (Qwen-Image T2I): Flux's 2×2
// packing, img_shapes, no text mask, timestep t.to(dtype)/1000, and
// whole-batch CFG dropout decided by one Python random.random() draw that
// is made on every call, even when cfg_dropout_prob is 0.
type QwenImageAdapter struct {
	GuidanceScale     float64 // default 3.5
	UseGuidanceEmbeds bool    // default false
}

var (
	_ ModelAdapter = (*QwenImageAdapter)(nil)
	_ OutputGrad   = (*QwenImageAdapter)(nil)
)

func newQwenImageAdapter(m map[string]any) (ModelAdapter, error) {
	k := newKwargs(m)
	a := &QwenImageAdapter{GuidanceScale: k.float("guidance_scale", 3.5), UseGuidanceEmbeds: k.bool("use_guidance_embeds", false)}
	return a, k.done()
}

// PrepareInputs implements ModelAdapter.
func (a *QwenImageAdapter) PrepareInputs(c *Context) (Inputs, error) {
	xt := c.NoisyLatents
	if xt.Rank() != 4 {
		return nil, fmt.Errorf("qwen_image: QwenImageAdapter expects 4D latents [B,C,H,W], got shape %v", xt.Shape)
	}
	B, C, H, W := xt.Shape[0], xt.Shape[1], xt.Shape[2], xt.Shape[3]
	if H%2 != 0 || W%2 != 0 {
		return nil, fmt.Errorf("qwen_image: latent height and width must be even for 2x2 packing, got %dx%d", H, W)
	}
	text, err := textEmbeddings(c.Batch, "text_embeddings", c.DType, true)
	if err != nil {
		return nil, fmt.Errorf("qwen_image: %w", err)
	}
	if c.RNG.Random() < c.CFGDropoutProb { // always drawn
		clear(text.Data)
	}
	shapes := make([][]ImgShape, B)
	for b := range shapes {
		shapes[b] = []ImgShape{{1, H / 2, W / 2}}
	}
	var guidance any
	if a.UseGuidanceEmbeds {
		g := NewTensor(c.DType, B)
		for b := range g.Data {
			g.Data[b] = RoundTo(c.DType, float32(a.GuidanceScale))
		}
		guidance = g
	}
	return Inputs{
		"hidden_states":              pack2x2(xt),
		"encoder_hidden_states":      text,
		"encoder_hidden_states_mask": nil,
		"timestep":                   castTimestepsDiv1000(c.Timesteps, c.DType),
		"img_shapes":                 shapes,
		"guidance":                   guidance,
		"_original_shape":            []int{B, C, H, W},
	}, nil
}

// Forward implements ModelAdapter.
func (a *QwenImageAdapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	shape, ok := in["_original_shape"].([]int)
	if !ok || len(shape) != 4 {
		return nil, nil, fmt.Errorf("qwen_image: inputs lack _original_shape")
	}
	delete(in, "_original_shape")
	out, err := callModel(ctx, model, nil, publicKwargs(in))
	if err != nil {
		return nil, nil, fmt.Errorf("qwen_image: %w", err)
	}
	B, C, H, W := shape[0], shape[1], shape[2], shape[3]
	tok := postProcess(out)
	if err := checkOutputShape(tok, []int{B, (H / 2) * (W / 2), 4 * C}, "[0]"); err != nil {
		return nil, nil, fmt.Errorf("qwen_image: %w", err)
	}
	return unpack2x2(tok, C, H, W), out, nil
}

// ModelOutputGrad implements OutputGrad.
func (a *QwenImageAdapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	g := make([]*Tensor, len(outputs))
	g[0] = pack2x2(dPred)
	return g, nil
}

// QwenImageEditAdapter is NeMo's QwenImageEditAdapter (Qwen-Image-Edit-2511):
// the packed noisy target followed by the packed clean context latents
// (batch "context_latents", a list), per-sample img_shapes, the text
// attention mask, no CFG dropout; the prediction is the target's tokens.
// It ignores constructor arguments, as NeMo does.
type QwenImageEditAdapter struct{}

var (
	_ ModelAdapter = QwenImageEditAdapter{}
	_ OutputGrad   = QwenImageEditAdapter{}
)

// newQwenImageEditAdapter ignores its arguments, as NeMo's (*args, **kwargs) does.
func newQwenImageEditAdapter(map[string]any) (ModelAdapter, error) {
	return QwenImageEditAdapter{}, nil
}

// PrepareInputs implements ModelAdapter.
func (QwenImageEditAdapter) PrepareInputs(c *Context) (Inputs, error) {
	xt := c.NoisyLatents
	if xt.Rank() != 4 {
		return nil, fmt.Errorf("qwen_image_edit: expects 4D target latents [B,C,H,W], got shape %v", xt.Shape)
	}
	B, C, H, W := xt.Shape[0], xt.Shape[1], xt.Shape[2], xt.Shape[3]
	if H%2 != 0 || W%2 != 0 {
		return nil, fmt.Errorf("qwen_image_edit: target latent height and width must be even, got %dx%d", H, W)
	}
	ctxs, ok := c.Batch["context_latents"].([]*Tensor)
	if !ok {
		return nil, fmt.Errorf("qwen_image_edit: batch[\"context_latents\"] must be a list of [B,C,H,W] tensors, got %T", c.Batch["context_latents"])
	}
	if len(ctxs) == 0 {
		return nil, fmt.Errorf("qwen_image_edit: batch[\"context_latents\"] is empty")
	}
	for i, t := range ctxs {
		if t == nil || t.Rank() != 4 || t.Shape[0] != B || t.Shape[1] != C || t.Shape[2]%2 != 0 || t.Shape[3]%2 != 0 {
			return nil, fmt.Errorf("qwen_image_edit: context_latents[%d] has shape %v, want [%d,%d,even,even]", i, shapeOf(t), B, C)
		}
	}
	text := c.Batch.Tensor("text_embeddings")
	if text == nil || text.Rank() != 3 {
		return nil, fmt.Errorf("qwen_image_edit: text_embeddings must be a [B,L,D] tensor, got %v", shapeOf(text))
	}
	mask := c.Batch.Tensor("text_attention_mask")
	if mask == nil || mask.Rank() != 2 || mask.Shape[0] != text.Shape[0] || mask.Shape[1] != text.Shape[1] {
		return nil, fmt.Errorf("qwen_image_edit: text_attention_mask must be [B,L] = [%d,%d], got %v", text.Shape[0], text.Shape[1], shapeOf(mask))
	}
	parts := []*Tensor{pack2x2(xt)}
	shape := []ImgShape{{1, H / 2, W / 2}}
	for _, t := range ctxs {
		parts = append(parts, pack2x2(t.To(c.DType)))
		shape = append(shape, ImgShape{1, t.Shape[2] / 2, t.Shape[3] / 2})
	}
	shapes := make([][]ImgShape, B)
	for b := range shapes {
		shapes[b] = slices.Clone(shape)
	}
	return Inputs{
		"hidden_states":              concatTokens(parts),
		"encoder_hidden_states":      text.To(c.DType),
		"encoder_hidden_states_mask": mask.Clone(),
		"timestep":                   castTimestepsDiv1000(c.Timesteps, c.DType),
		"img_shapes":                 shapes,
		"guidance":                   nil,
		"_target_token_count":        (H / 2) * (W / 2),
		"_target_latent_shape":       []int{C, H, W},
	}, nil
}

func shapeOf(t *Tensor) any {
	if t == nil {
		return "none"
	}
	return t.Shape
}

// concatTokens concatenates [B,Ni,F] tensors along dim 1.
func concatTokens(parts []*Tensor) *Tensor {
	B, F := parts[0].Shape[0], parts[0].Shape[2]
	N := 0
	for _, p := range parts {
		N += p.Shape[1]
	}
	out := NewTensor(parts[0].DType, B, N, F)
	for b := range B {
		off := b * N * F
		for _, p := range parts {
			n := p.Shape[1] * F
			copy(out.Data[off:off+n], p.Data[b*n:(b+1)*n])
			off += n
		}
	}
	return out
}

// Forward implements ModelAdapter: the first _target_token_count tokens are
// unpacked to [B,C,H,W].
func (QwenImageEditAdapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	n, ok1 := in["_target_token_count"].(int)
	shape, ok2 := in["_target_latent_shape"].([]int)
	if !ok1 || !ok2 || len(shape) != 3 {
		return nil, nil, fmt.Errorf("qwen_image_edit: inputs lack _target_token_count/_target_latent_shape")
	}
	kw := publicKwargs(in)
	kw["attention_kwargs"] = nil
	out, err := callModel(ctx, model, nil, kw)
	if err != nil {
		return nil, nil, fmt.Errorf("qwen_image_edit: %w", err)
	}
	tok := postProcess(out)
	C, H, W := shape[0], shape[1], shape[2]
	if tok.Rank() != 3 || tok.Shape[1] < n || tok.Shape[2] != 4*C {
		return nil, nil, fmt.Errorf("qwen_image_edit: model output [0] has shape %v, want [B,≥%d,%d]", tok.Shape, n, 4*C)
	}
	return unpack2x2(tok, C, H, W), out, nil
}

// ModelOutputGrad implements OutputGrad: the target tokens get the packed
// prediction gradient, the context tokens zero. (NeMo's adapter has its own
// shape-checked MSE; fmtrain's default loss checks shapes for every
// adapter, so this one needs no LossComputer.)
func (QwenImageEditAdapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	tok := outputs[0]
	g := NewTensor(Float32, tok.Shape...)
	packed := pack2x2(dPred) // [B, n, 4C]: the target tokens; context tokens get 0
	B, N, F := tok.Shape[0], tok.Shape[1], tok.Shape[2]
	n := packed.Shape[1]
	for b := range B {
		copy(g.Data[b*N*F:b*N*F+n*F], packed.Data[b*n*F:(b+1)*n*F])
	}
	gs := make([]*Tensor, len(outputs))
	gs[0] = g
	return gs, nil
}
