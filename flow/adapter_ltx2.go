package flow

import (
	"context"
	"fmt"
)

// LTX2Adapter is NeMo's LTX2Adapter (LTX-2.3 video + audio): the audio
// latents are noised inside PrepareInputs with the video's σ and an extra
// Randn draw, video and audio are tokenised, timesteps are expanded per
// token (σ·T, float32), and AuxiliaryLosses adds
// audio_loss_weight · mean((audio_pred − audio_target)²).
type LTX2Adapter struct {
	AudioLossWeight float64 // default 1.0
	FPS             float64 // default 24.0
}

var (
	_ ModelAdapter = (*LTX2Adapter)(nil)
	_ AuxLosser    = (*LTX2Adapter)(nil)
	_ OutputGrad   = (*LTX2Adapter)(nil)
)

// ltx2MelBins is the fixed mel-bin count NeMo unpacks audio tokens with.
const ltx2MelBins = 16

func newLTX2Adapter(m map[string]any) (ModelAdapter, error) {
	k := newKwargs(m)
	a := &LTX2Adapter{AudioLossWeight: k.float("audio_loss_weight", 1.0), FPS: k.float("fps", 24.0)}
	return a, k.done()
}

func ltx2MissingKey(key string) error {
	return fmt.Errorf("ltx2: LTX2Adapter requires '%s' in the batch. Preprocess your dataset with the 'ltx2' processor "+
		"(tools/diffusion/preprocessing_multiprocess.py --processor ltx2), which caches audio latents and per-stream text embeddings.", key)
}

// PrepareInputs implements ModelAdapter.
func (a *LTX2Adapter) PrepareInputs(c *Context) (Inputs, error) {
	for _, key := range []string{"audio_latents", "text_embeddings", "audio_text_embeddings", "text_mask"} {
		if c.Batch.Tensor(key) == nil {
			return nil, ltx2MissingKey(key)
		}
	}
	xt := c.NoisyLatents
	if xt.Rank() != 5 {
		return nil, fmt.Errorf("ltx2: expects 5D video latents [B,C,F,H,W], got shape %v", xt.Shape)
	}
	B, F, H, W := xt.Shape[0], xt.Shape[2], xt.Shape[3], xt.Shape[4]
	audio := c.Batch.Tensor("audio_latents").To(Float32)
	if audio.Rank() != 4 || audio.Shape[0] != B {
		return nil, fmt.Errorf("ltx2: audio_latents must be [B,Ca,L,M] with B=%d, got shape %v", B, audio.Shape)
	}
	Ca, L, M := audio.Shape[1], audio.Shape[2], audio.Shape[3]
	eps := c.RNG.Randn(audio.Numel())
	target := NewTensor(Float32, audio.Shape...)
	for i, e := range eps {
		target.Data[i] = float32(e - audio.Data[i])
	}
	noisyAudio := FromFloat32(c.DType, Interpolate(audio.Data, eps, c.Sigma), audio.Shape...)
	// [B,Ca,L,M] → [B,L,Ca·M], feature = c·M + m.
	audioTok := NewTensor(c.DType, B, L, Ca*M)
	for b := range B {
		for ch := range Ca {
			for l := range L {
				copy(audioTok.Data[(b*L+l)*Ca*M+ch*M:(b*L+l)*Ca*M+(ch+1)*M], noisyAudio.Data[((b*Ca+ch)*L+l)*M:((b*Ca+ch)*L+l+1)*M])
			}
		}
	}
	N := F * H * W
	ts := NewTensor(Float32, B, N)
	ats := NewTensor(Float32, B, L)
	for b := range B {
		for n := range N {
			ts.Data[b*N+n] = c.Timesteps[b]
		}
		for l := range L {
			ats.Data[b*L+l] = c.Timesteps[b]
		}
	}
	tText := c.Batch.Tensor("text_embeddings").To(c.DType)
	aText := c.Batch.Tensor("audio_text_embeddings").To(c.DType)
	mask := c.Batch.Tensor("text_mask")
	return Inputs{
		"hidden_states":                flattenSpatial(xt),
		"audio_hidden_states":          audioTok,
		"encoder_hidden_states":        tText,
		"audio_encoder_hidden_states":  aText,
		"encoder_attention_mask":       mask.Clone(),
		"audio_encoder_attention_mask": mask.Clone(),
		"timestep":                     ts,
		"audio_timestep":               ats,
		"sigma":                        FromFloat32(Float32, append([]float32(nil), c.Timesteps...), B),
		"audio_sigma":                  FromFloat32(Float32, append([]float32(nil), c.Timesteps...), B),
		"num_frames":                   F,
		"height":                       H,
		"width":                        W,
		"fps":                          a.FPS,
		"audio_num_frames":             L,
		"_audio_target":                target,
	}, nil
}

// Forward implements ModelAdapter: it drops private keys and, for a model
// implementing KwargFilter, the keywords it does not accept; it stashes
// the unpacked audio prediction in inputs["_audio_pred"].
func (a *LTX2Adapter) Forward(ctx context.Context, model Model, in Inputs) (*Tensor, []*Tensor, error) {
	kw := publicKwargs(in)
	if f, ok := model.(KwargFilter); ok {
		for k := range kw {
			if !f.AcceptsKwarg(k) {
				delete(kw, k)
			}
		}
	}
	out, err := callModel(ctx, model, nil, kw)
	if err != nil {
		return nil, nil, fmt.Errorf("ltx2: %w", err)
	}
	if len(out) < 2 || out[1] == nil {
		return nil, nil, fmt.Errorf("ltx2: model returned %d outputs, want (video, audio)", len(out))
	}
	F, _ := in["num_frames"].(int)
	H, _ := in["height"].(int)
	W, _ := in["width"].(int)
	video, audio := out[0], out[1]
	if video.Rank() != 3 || video.Shape[1] != F*H*W {
		return nil, nil, fmt.Errorf("ltx2: video output has shape %v, want [B,%d,C]", video.Shape, F*H*W)
	}
	if audio.Rank() != 3 || audio.Shape[2]%ltx2MelBins != 0 {
		return nil, nil, fmt.Errorf("ltx2: audio output has shape %v, want [B,L,Ca·%d]", audio.Shape, ltx2MelBins)
	}
	in["_audio_pred"] = unpackAudio(audio)
	return unflattenSpatial(video, []int{F, H, W}), out, nil
}

// unpackAudio is [B,L,Ca·16] → [B,Ca,L,16].
func unpackAudio(tok *Tensor) *Tensor {
	B, L, Fe := tok.Shape[0], tok.Shape[1], tok.Shape[2]
	Ca, M := Fe/ltx2MelBins, ltx2MelBins
	out := NewTensor(tok.DType, B, Ca, L, M)
	for b := range B {
		for ch := range Ca {
			for l := range L {
				copy(out.Data[((b*Ca+ch)*L+l)*M:((b*Ca+ch)*L+l+1)*M], tok.Data[(b*L+l)*Fe+ch*M:(b*L+l)*Fe+(ch+1)*M])
			}
		}
	}
	return out
}

// packAudio is the inverse of unpackAudio.
func packAudio(x *Tensor) *Tensor {
	B, Ca, L, M := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	out := NewTensor(x.DType, B, L, Ca*M)
	for b := range B {
		for ch := range Ca {
			for l := range L {
				copy(out.Data[(b*L+l)*Ca*M+ch*M:(b*L+l)*Ca*M+(ch+1)*M], x.Data[((b*Ca+ch)*L+l)*M:((b*Ca+ch)*L+l+1)*M])
			}
		}
	}
	return out
}

func (a *LTX2Adapter) audioPair(in Inputs) (pred, target *Tensor, err error) {
	pred, _ = in["_audio_pred"].(*Tensor)
	target, _ = in["_audio_target"].(*Tensor)
	if pred == nil || target == nil {
		return nil, nil, fmt.Errorf("ltx2: inputs lack _audio_pred/_audio_target (call Forward first)")
	}
	if pred.Numel() != target.Numel() {
		return nil, nil, fmt.Errorf("ltx2: audio prediction %v does not match audio target %v", pred.Shape, target.Shape)
	}
	return pred, target, nil
}

// AuxiliaryLosses implements AuxLosser: audio_loss = w · mean((pred − target)²).
func (a *LTX2Adapter) AuxiliaryLosses(in Inputs) ([]AuxLoss, error) {
	pred, target, err := a.audioPair(in)
	if err != nil {
		return nil, err
	}
	sq := make([]float32, pred.Numel())
	for i, p := range pred.Data {
		d := float32(p - target.Data[i])
		sq[i] = float32(d * d)
	}
	return []AuxLoss{{Name: "audio_loss", Value: float32(float32(a.AudioLossWeight) * mean32(sq))}}, nil
}

// ModelOutputGrad implements OutputGrad: video tokens get the flattened
// prediction gradient, audio tokens the packed gradient of audio_loss,
// w·2(pred − target)/N.
func (a *LTX2Adapter) ModelOutputGrad(in Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error) {
	pred, target, err := a.audioPair(in)
	if err != nil {
		return nil, err
	}
	dAudio := NewTensor(Float32, pred.Shape...)
	scale := 2 * a.AudioLossWeight / float64(pred.Numel())
	for i, p := range pred.Data {
		dAudio.Data[i] = float32(scale * (float64(p) - float64(target.Data[i])))
	}
	g := make([]*Tensor, len(outputs))
	g[0] = flattenSpatial(dPred)
	g[1] = packAudio(dAudio)
	return g, nil
}
