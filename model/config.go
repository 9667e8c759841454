// Package model is FM-DiT (shared/design/fm-dit.md), fmtrain's reference
// velocity model, written llm.c-style: the parameters live in ONE flat
// float32 buffer and the gradients in another with the same layout (ParamTable
// gives each tensor's name, shape and offset; Params lays named views over
// either buffer), each layer has an explicit forward and backward built from
// kernels.Backend ops, and the values backward needs are named activation
// fields allocated once per batch shape.
//
// A training step is:
//
//	out, _ := m.Forward(ctx, in)          // velocity, in the layout of in.X
//	loss, dOut := lossAndGrad(out)        // e.g. flow's pipeline
//	m.ZeroGrad()
//	m.Backward(ctx, dOut)                 // accumulates into m.Grads()
//	optimizer.Step(m.Params(), m.Grads()) // flat loops
//
// A Model is used by one goroutine at a time.
package model

import (
	"fmt"
	"math"
)

// Config is FM-DiT's architecture (the design page's config table).
type Config struct {
	InChannels  int     `yaml:"in_channels" json:"in_channels"`
	OutChannels int     `yaml:"out_channels" json:"out_channels"`
	PatchSize   int     `yaml:"patch_size" json:"patch_size"`
	PatchSizeT  int     `yaml:"patch_size_t" json:"patch_size_t"`
	HiddenSize  int     `yaml:"hidden_size" json:"hidden_size"`
	Depth       int     `yaml:"depth" json:"depth"`
	NumHeads    int     `yaml:"num_heads" json:"num_heads"`
	MLPRatio    float64 `yaml:"mlp_ratio" json:"mlp_ratio"`
	TextDim     int     `yaml:"text_dim" json:"text_dim"`
}

// TimestepDim is the width of the timestep sinusoid fed to t_embedder.fc1.
const TimestepDim = 256

// Validate reports the first field that breaks the design page's constraints.
func (c Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{
		{"in_channels", c.InChannels}, {"out_channels", c.OutChannels}, {"patch_size", c.PatchSize},
		{"patch_size_t", c.PatchSizeT}, {"hidden_size", c.HiddenSize}, {"depth", c.Depth},
		{"num_heads", c.NumHeads}, {"text_dim", c.TextDim},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("model: %s (%d) must be positive", p.name, p.v)
		}
	}
	if c.HiddenSize%16 != 0 {
		return fmt.Errorf("model: hidden_size (%d) must be a multiple of 16", c.HiddenSize)
	}
	if c.HiddenSize%c.NumHeads != 0 {
		return fmt.Errorf("model: hidden_size (%d) must be a multiple of num_heads (%d)", c.HiddenSize, c.NumHeads)
	}
	m := c.MLPRatio * float64(c.HiddenSize)
	if !(c.MLPRatio > 0) || m != math.Trunc(m) {
		return fmt.Errorf("model: mlp_ratio (%g) × hidden_size (%d) must be a positive integer", c.MLPRatio, c.HiddenSize)
	}
	return nil
}

// MLPHidden is M = mlp_ratio·D.
func (c Config) MLPHidden() int { return int(c.MLPRatio * float64(c.HiddenSize)) }

// HeadDim is dh = D / num_heads.
func (c Config) HeadDim() int { return c.HiddenSize / c.NumHeads }

// PatchLen is K = Cin·pt·p·p, the patch embedding's input width.
func (c Config) PatchLen() int { return c.InChannels * c.PatchSizeT * c.PatchSize * c.PatchSize }

// OutPatchLen is pt·p·p·Cout, the final linear's output width.
func (c Config) OutPatchLen() int { return c.PatchSizeT * c.PatchSize * c.PatchSize * c.OutChannels }

// ParamInfo locates one parameter tensor in the flat buffers.
type ParamInfo struct {
	Name   string
	Shape  []int
	Offset int // first element in Params()/Grads()
	Size   int // number of elements
}

// ParamTable lists every parameter in buffer order: the embedders, then
// each block, then the final layer (so each block is one contiguous range,
// which the gradient-ready hook hands out in reverse).
func ParamTable(c Config) []ParamInfo {
	D, M, K, Ko, Dt := c.HiddenSize, c.MLPHidden(), c.PatchLen(), c.OutPatchLen(), c.TextDim
	var t []ParamInfo
	off := 0
	add := func(name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		t = append(t, ParamInfo{Name: name, Shape: shape, Offset: off, Size: n})
		off += n
	}
	linear := func(name string, out, in int) {
		add(name+".weight", out, in)
		add(name+".bias", out)
	}
	linear("patch_embed", D, K)
	linear("t_embedder.fc1", D, TimestepDim)
	linear("t_embedder.fc2", D, D)
	linear("y_embedder.fc1", D, Dt)
	linear("y_embedder.fc2", D, D)
	for i := 0; i < c.Depth; i++ {
		p := fmt.Sprintf("blocks.%d.", i)
		linear(p+"adaLN_modulation", 6*D, D)
		linear(p+"attn.qkv", 3*D, D)
		linear(p+"attn.proj", D, D)
		linear(p+"cross_attn.q", D, D)
		linear(p+"cross_attn.kv", 2*D, D)
		linear(p+"cross_attn.proj", D, D)
		linear(p+"mlp.fc1", M, D)
		linear(p+"mlp.fc2", D, M)
	}
	linear("final_layer.adaLN_modulation", 2*D, D)
	linear("final_layer.linear", Ko, D)
	return t
}

// NumParams is the total number of parameters (the length of the flat buffers).
func NumParams(c Config) int {
	t := ParamTable(c)
	last := t[len(t)-1]
	return last.Offset + last.Size
}

// StepFLOPs is the matmul work of one training step (forward + backward) on
// B samples of N tokens with S text tokens, by shared/bench/configs.md's
// rule: 2·m·n·k per GEMM, three GEMMs' worth per linear layer (forward,
// input gradient, weight gradient), attention's score and value products
// counted the same way (forward 2, backward 4).
func StepFLOPs(c Config, B, N, S int) float64 {
	D, M, K, Ko, Dt := float64(c.HiddenSize), float64(c.MLPHidden()), float64(c.PatchLen()), float64(c.OutPatchLen()), float64(c.TextDim)
	b, n, s := float64(B), float64(N), float64(S)
	T, Ts := b*n, b*s
	mnk := T*K*D + // patch embed
		b*(TimestepDim*D+D*D) + // t embedder
		Ts*(Dt*D+D*D) + // y embedder
		b*D*2*D + T*D*Ko // final layer
	perBlock := b*D*6*D + // adaLN
		T*D*3*D + T*D*D + // qkv, proj
		T*D*D + Ts*D*2*D + T*D*D + // cross q, kv, proj
		T*D*M + T*M*D + // mlp
		2*b*n*n*D + // self-attention scores and values (all heads)
		2*b*n*s*D // cross-attention scores and values
	mnk += float64(c.Depth) * perBlock
	return 3 * 2 * mnk
}
