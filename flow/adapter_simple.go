package flow

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// SimpleAdapter is NeMo's SimpleAdapter (Wan 2.1/2.2 and the recipe
// default): the model gets hidden_states = x_t, timestep = t in the compute
// dtype (no /1000), encoder_hidden_states and attention_kwargs {"scale": 1}.
// It ignores cfg_dropout_prob, as NeMo does, and any constructor argument.
type SimpleAdapter struct{}

var (
	_ ModelAdapter = SimpleAdapter{}
	_ OutputGrad   = SimpleAdapter{}
)

// newSimpleAdapter ignores its arguments: NeMo's SimpleAdapter takes
// (*args, **kwargs) and drops them.
func newSimpleAdapter(map[string]any) (ModelAdapter, error) { return SimpleAdapter{}, nil }

// PrepareInputs implements ModelAdapter.
func (SimpleAdapter) PrepareInputs(c *Context) (Inputs, error) {
	text, err := textEmbeddings(c.Batch, "text_embeddings", c.DType, true)
	if err != nil {
		return nil, fmt.Errorf("simple: %w", err)
	}
	return Inputs{
		"hidden_states":         c.NoisyLatents,
		"timestep":              castTimesteps(c.Timesteps, c.DType),
		"encoder_hidden_states": text,
		"attention_kwargs":      map[string]float64{"scale": 1.0},
	}, nil
}

// Forward implements ModelAdapter.
func (SimpleAdapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	out, err := callModel(ctx, model, nil, publicKwargs(in))
	if err != nil {
		return nil, nil, fmt.Errorf("simple: %w", err)
	}
	pred := postProcess(out)
	if x, ok := in["hidden_states"].(*Tensor); ok {
		if err := checkOutputShape(pred, x.Shape, "[0]"); err != nil {
			return nil, nil, fmt.Errorf("simple: %w", err)
		}
	}
	return pred, out, nil
}

// ModelOutputGrad implements OutputGrad: the prediction is output [0].
func (SimpleAdapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	return identityOutputGrad(outputs, dPred)
}

func identityOutputGrad(outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	if len(outputs) == 0 || !slices.Equal(outputs[0].Shape, dPred.Shape) {
		return nil, fmt.Errorf("gradient shape %v does not match output %v", dPred.Shape, outputs)
	}
	g := make([]*Tensor, len(outputs))
	g[0] = dPred
	return g, nil
}

// HunyuanAdapter is NeMo's HunyuanAdapter (HunyuanVideo 1.5): text
// truncated to the longest valid mask length (summed in the compute dtype),
// image embeddings (or zeros of DefaultImageEmbedShape), and condition
// latents [B,C+1,F,H,W] concatenated on channels (first clean frame and a
// mask channel for i2v). The model is called with latents and timesteps
// positionally.
type HunyuanAdapter struct {
	DefaultImageEmbedShape [2]int // default (729, 1152)
	UseConditionLatents    bool   // default true
}

var (
	_ ModelAdapter = (*HunyuanAdapter)(nil)
	_ OutputGrad   = (*HunyuanAdapter)(nil)
)

func newHunyuanAdapter(m map[string]any) (ModelAdapter, error) {
	k := newKwargs(m)
	shape := k.ints("default_image_embed_shape", []int{729, 1152})
	a := &HunyuanAdapter{UseConditionLatents: k.bool("use_condition_latents", true)}
	if err := k.done(); err != nil {
		return nil, err
	}
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 {
		return nil, fmt.Errorf("default_image_embed_shape %v must be two positive integers", shape)
	}
	a.DefaultImageEmbedShape = [2]int{shape[0], shape[1]}
	return a, nil
}

// validLength is max(1, ⌊dtype(max_b Σ_l mask[b,l])⌋) with the mask cast to
// dtype first: in bf16 the length itself is rounded (257 → 256).
func validLength(mask *Tensor, dtype DType) int {
	m := mask.To(dtype)
	B, L := m.Shape[0], m.Shape[1]
	best := float32(math.Inf(-1))
	for b := range B {
		var s float32 // exact in float32 for masks of 0/1 shorter than 2^24
		for l := range L {
			s += m.Data[b*L+l]
		}
		best = max(best, RoundTo(dtype, s))
	}
	return max(1, int(best))
}

// truncateTokens keeps the first n positions of dim 1 of t ([B,L,…]).
func truncateTokens(t *Tensor, n int) *Tensor {
	if n >= t.Shape[1] {
		return t
	}
	B, L := t.Shape[0], t.Shape[1]
	inner := t.Numel() / (B * L)
	shape := slices.Clone(t.Shape)
	shape[1] = n
	out := NewTensor(t.DType, shape...)
	for b := range B {
		if t.DType.IsFloat() {
			copy(out.Data[b*n*inner:(b+1)*n*inner], t.Data[b*L*inner:b*L*inner+n*inner])
		} else {
			copy(out.Ints[b*n*inner:(b+1)*n*inner], t.Ints[b*L*inner:b*L*inner+n*inner])
		}
	}
	return out
}

// PrepareInputs implements ModelAdapter.
func (a *HunyuanAdapter) PrepareInputs(c *Context) (Inputs, error) {
	text, err := textEmbeddings(c.Batch, "text_embeddings", c.DType, true)
	if err != nil {
		return nil, fmt.Errorf("hunyuan: %w", err)
	}
	var mask, text2, mask2 any // nil stays Python None
	if m := c.Batch.Tensor("text_mask"); m != nil {
		n := validLength(m, c.DType)
		text = truncateTokens(text, n)
		mask = truncateTokens(m.To(c.DType), n)
	}
	if t2 := c.Batch.Tensor("text_embeddings_2"); t2 != nil {
		t2d := t2.To(c.DType)
		if m2 := c.Batch.Tensor("text_mask_2"); m2 != nil {
			n := validLength(m2, c.DType)
			t2d = truncateTokens(t2d, n)
			mask2 = truncateTokens(m2.To(c.DType), n)
		}
		text2 = t2d
	} else if m2 := c.Batch.Tensor("text_mask_2"); m2 != nil {
		mask2 = truncateTokens(m2.To(c.DType), validLength(m2, c.DType))
	}
	X, xt := c.Latents, c.NoisyLatents
	B := X.Shape[0]
	var image *Tensor
	if ie := c.Batch.Tensor("image_embeds"); c.TaskType == TaskI2V && ie != nil {
		image = ie.To(c.DType)
	} else {
		image = NewTensor(c.DType, B, a.DefaultImageEmbedShape[0], a.DefaultImageEmbedShape[1])
	}
	latents := xt
	if a.UseConditionLatents {
		if err := requireRank(xt, 5, "hunyuan: latents [B,C,F,H,W] with condition latents"); err != nil {
			return nil, err
		}
		if latents, err = hunyuanConditioned(X, xt, c.TaskType); err != nil {
			return nil, err
		}
	}
	return Inputs{
		"latents":                  latents,
		"timesteps":                castTimesteps(c.Timesteps, c.DType),
		"encoder_hidden_states":    text,
		"encoder_attention_mask":   mask,
		"encoder_hidden_states_2":  text2,
		"encoder_attention_mask_2": mask2,
		"image_embeds":             image,
		"attention_kwargs":         map[string]float64{"scale": 1.0},
	}, nil
}

// hunyuanConditioned returns cat([x_t, cond], dim=1): cond is zeros
// [B,C+1,F,H,W]; for i2v frame 0 holds the clean first frame and a mask of 1.
func hunyuanConditioned(X, xt *Tensor, task string) (*Tensor, error) {
	if task != TaskI2V && task != TaskT2V {
		return nil, fmt.Errorf("hunyuan: unknown task_type %q (want t2v or i2v)", task)
	}
	B, C, F, H, W := xt.Shape[0], xt.Shape[1], xt.Shape[2], xt.Shape[3], xt.Shape[4]
	frame := H * W
	vol := F * frame
	out := NewTensor(xt.DType, B, 2*C+1, F, H, W)
	for b := range B {
		copy(out.Data[b*(2*C+1)*vol:], xt.Data[b*C*vol:(b+1)*C*vol])
		if task == TaskI2V {
			cond := out.Data[(b*(2*C+1)+C)*vol:]
			for c := range C {
				copy(cond[c*vol:c*vol+frame], X.Data[(b*C+c)*vol:(b*C+c)*vol+frame])
			}
			for i := range frame {
				cond[C*vol+i] = 1
			}
		}
	}
	return out, nil
}

// Forward implements ModelAdapter.
func (a *HunyuanAdapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	kw := publicKwargs(in)
	args := []any{kw["latents"], kw["timesteps"]}
	delete(kw, "latents")
	delete(kw, "timesteps")
	out, err := callModel(ctx, model, args, kw)
	if err != nil {
		return nil, nil, fmt.Errorf("hunyuan: %w", err)
	}
	return postProcess(out), out, nil
}

// ModelOutputGrad implements OutputGrad: the prediction is output [0].
func (a *HunyuanAdapter) ModelOutputGrad(_ Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	return identityOutputGrad(outputs, dPred)
}
