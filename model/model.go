package model

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/fmtrain/fmtrain/kernels"
)

// Input is one batch for Forward. X is [B,Cin,F,H,W] row-major (an image
// batch [B,Cin,H,W] is F=1), T the B timesteps on the pipeline's
// [0, num_train_timesteps] scale, Txt [B,S,TextDim] and Mask [B,S] (1 keep,
// 0 padding; nil keeps every token). Forward copies what it needs: the
// caller may reuse its slices afterwards.
type Input struct {
	X          []float32
	B, F, H, W int
	T          []float32
	Txt        []float32
	S          int
	Mask       []float32
}

// Model is FM-DiT on a kernels.Backend. Not safe for concurrent use.
type Model struct {
	cfg    Config
	be     kernels.Backend
	params []float32
	grads  []float32
	P, G   *Params // views over params and grads

	act      activations
	arena    []float32 // backing store of act
	store    []float32 // backing store of act's [store] tensors; nil: in arena
	capacity shape     // what arena and store were sized for
	cur      shape     // what act is laid out for
	ready    bool      // Forward ran since the last layout, so Backward may run

	hook func(lo, hi int)
}

// ErrNoForward is returned by Backward when no Forward preceded it.
var ErrNoForward = errors.New("model: Backward called without a preceding Forward")

// New builds a model with zeroed parameters (call InitDiT or load weights)
// whose ops run on be.
func New(cfg Config, be kernels.Backend) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if be == nil {
		return nil, errors.New("model: nil backend")
	}
	n := NumParams(cfg)
	m := &Model{cfg: cfg, be: be, params: alloc(be, n), grads: alloc(be, n)}
	var err error
	if m.P, err = PointParams(cfg, m.params); err != nil {
		return nil, err
	}
	if m.G, err = PointParams(cfg, m.grads); err != nil {
		return nil, err
	}
	return m, nil
}

// alloc takes n floats from the backend's allocator when it has one.
func alloc(be kernels.Backend, n int) []float32 {
	if a, ok := be.(kernels.Allocator); ok {
		return a.Alloc(n)
	}
	return make([]float32, n)
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Backend returns the backend the model runs on.
func (m *Model) Backend() kernels.Backend { return m.be }

// Params is the flat parameter buffer, laid out by ParamTable.
func (m *Model) Params() []float32 { return m.params }

// Grads is the flat gradient buffer, laid out like Params.
func (m *Model) Grads() []float32 { return m.grads }

// ZeroGrad clears the gradient buffer: the only place gradients are reset
// (Backward accumulates, so micro-batches add up).
func (m *Model) ZeroGrad() { kernels.Zero(m.be, m.grads) }

// SetGradReadyHook installs fn (nil removes it). During Backward, fn is
// called on the Backward goroutine, in reverse layer order, with each
// contiguous range [lo,hi) of Grads() whose values are final for this
// Backward: the final layer, then each block from the last to the first,
// then the embedders. Together the ranges cover the whole buffer exactly
// once. On an asynchronous backend the model synchronises before each call,
// so fn may read the range on the host. fn may start reducing the range in
// the background; it must not modify other parts of Grads().
func (m *Model) SetGradReadyHook(fn func(lo, hi int)) { m.hook = fn }

// InputGrads returns the gradients of the last Backward with respect to
// the latent input x [B,Cin,F,H,W] and the text txt [B,S,TextDim]. The
// slices are owned by the model and valid until the next Forward.
func (m *Model) InputGrads() (dx, dtxt []float32) { return m.act.dx, m.act.dtxt }

// Reserve sizes the activations for batches of up to B samples, N tokens
// and S text tokens, so later batches of any smaller shape run without
// allocating. Forward reserves its first batch's shape itself; call Reserve
// first when batch shapes vary (e.g. text truncated per batch).
//
// On a backend with activation storage (kernels.ActivationAllocator: bf16
// on the CUDA mixed-precision backend) the saved activations go there;
// when it declines, they are float32 like the rest.
func (m *Model) Reserve(B, N, S int) {
	c := shape{B: B, N: N, S: S}
	var count, countStore arena
	m.act.layout(m.cfg, c, &count, &countStore)
	m.store = nil
	if a, ok := m.be.(kernels.ActivationAllocator); ok {
		if st, err := a.AllocActivations(countStore.off); err == nil {
			m.store = st
		}
	}
	if m.store == nil {
		count.off += countStore.off
	}
	m.arena = alloc(m.be, count.off)
	m.capacity = c
	m.cur = shape{}
	m.ready = false
}

// prepare lays the activations out for s, allocating only when nothing was
// reserved yet; a shape larger than the reservation is an error.
func (m *Model) prepare(s shape) error {
	if m.arena == nil {
		m.Reserve(s.B, s.N, s.S)
	}
	if s.B > m.capacity.B || s.N > m.capacity.N || s.S > m.capacity.S {
		return fmt.Errorf("model: batch (B=%d, N=%d, S=%d) exceeds the activations reserved for (B=%d, N=%d, S=%d); call Reserve with the largest shape",
			s.B, s.N, s.S, m.capacity.B, m.capacity.N, m.capacity.S)
	}
	if s != m.cur {
		ar := &arena{buf: m.arena}
		st := ar
		if m.store != nil {
			st = &arena{buf: m.store}
		}
		m.act.layout(m.cfg, s.withoutGrid(), ar, st)
		kernels.PositionTable(m.act.pos, s.Fp, s.Hp, s.Wp, m.cfg.HiddenSize)
		m.cur = s
	}
	return nil
}

func (s shape) withoutGrid() shape { return shape{B: s.B, N: s.N, S: s.S} }

// check validates in against the config and returns its shape.
func (m *Model) check(in Input) (shape, error) {
	c := m.cfg
	switch {
	case in.B <= 0 || in.F <= 0 || in.H <= 0 || in.W <= 0 || in.S <= 0:
		return shape{}, fmt.Errorf("model: input sizes must be positive (B=%d F=%d H=%d W=%d S=%d)", in.B, in.F, in.H, in.W, in.S)
	case in.H%c.PatchSize != 0 || in.W%c.PatchSize != 0:
		return shape{}, fmt.Errorf("model: H (%d) and W (%d) must be multiples of patch_size (%d)", in.H, in.W, c.PatchSize)
	case in.F%c.PatchSizeT != 0:
		return shape{}, fmt.Errorf("model: F (%d) must be a multiple of patch_size_t (%d)", in.F, c.PatchSizeT)
	case len(in.X) != in.B*c.InChannels*in.F*in.H*in.W:
		return shape{}, fmt.Errorf("model: x has %d values, want B·in_channels·F·H·W = %d·%d·%d·%d·%d", len(in.X), in.B, c.InChannels, in.F, in.H, in.W)
	case len(in.T) != in.B:
		return shape{}, fmt.Errorf("model: %d timesteps for a batch of %d", len(in.T), in.B)
	case len(in.Txt) != in.B*in.S*c.TextDim:
		return shape{}, fmt.Errorf("model: text has %d values, want B·S·text_dim = %d·%d·%d", len(in.Txt), in.B, in.S, c.TextDim)
	case in.Mask != nil && len(in.Mask) != in.B*in.S:
		return shape{}, fmt.Errorf("model: text mask has %d values, want B·S = %d·%d", len(in.Mask), in.B, in.S)
	}
	fp, hp, wp := in.F/c.PatchSizeT, in.H/c.PatchSize, in.W/c.PatchSize
	return shape{B: in.B, N: fp * hp * wp, S: in.S, Fp: fp, Hp: hp, Wp: wp}, nil
}

func (m *Model) patchDims(channels int) kernels.PatchDims {
	s := m.cur
	return kernels.PatchDims{B: s.B, C: channels, F: s.Fp * m.cfg.PatchSizeT, H: s.Hp * m.cfg.PatchSize, W: s.Wp * m.cfg.PatchSize, P: m.cfg.PatchSize, PT: m.cfg.PatchSizeT}
}

func (m *Model) attnDims(nk, qRow, kvRow int) kernels.AttentionDims {
	c := m.cfg
	return kernels.AttentionDims{B: m.cur.B, Heads: c.NumHeads, Nq: m.cur.N, Nk: nk, HeadDim: c.HeadDim(),
		QRow: qRow, KRow: kvRow, VRow: kvRow, ORow: c.HiddenSize, Scale: float32(1 / math.Sqrt(float64(c.HeadDim())))}
}

// sync waits for an asynchronous backend before the host reads results.
func (m *Model) sync() error {
	if s, ok := m.be.(kernels.Synchronizer); ok {
		return s.Synchronize()
	}
	return nil
}

// Forward runs fm-dit.md steps 1–7 and returns the velocity
// [B,Cout,F,H,W] (owned by the model, valid until the next Forward).
func (m *Model) Forward(ctx context.Context, in Input) ([]float32, error) {
	s, err := m.check(in)
	if err != nil {
		return nil, err
	}
	// The host writes the text, mask and sinusoids below: an asynchronous
	// backend may still be reading them from the previous step.
	if err := m.sync(); err != nil {
		return nil, fmt.Errorf("model: forward: %w", err)
	}
	if err := m.prepare(s); err != nil {
		return nil, err
	}
	m.ready = false
	be, c, a, P := m.be, m.cfg, &m.act, m.P
	B, N, S, D, M, K, Ko, Dt := s.B, s.N, s.S, c.HiddenSize, c.MLPHidden(), c.PatchLen(), c.OutPatchLen(), c.TextDim
	T, Ts := B*N, B*S

	copy(a.txt, in.Txt)
	if in.Mask != nil {
		copy(a.mask, in.Mask)
	} else {
		for i := range a.mask {
			a.mask[i] = 1
		}
	}

	// 1–2. patchify, embed, add positions.
	be.PatchifyForward(a.patches, in.X, m.patchDims(c.InChannels))
	be.LinearForward(a.h, a.patches, P.PatchEmbed.W, P.PatchEmbed.B, T, K, D)
	for b := 0; b < B; b++ {
		hb := a.h[b*N*D : (b+1)*N*D]
		be.ResidualForward(hb, hb, a.pos, N*D)
	}
	// 3. timestep embedding.
	kernels.TimestepEmbedding(a.temb, in.T, TimestepDim)
	be.LinearForward(a.t1, a.temb, P.TFC1.W, P.TFC1.B, B, TimestepDim, D)
	be.SiLUForward(a.t1s, a.t1, B*D)
	be.LinearForward(a.c, a.t1s, P.TFC2.W, P.TFC2.B, B, D, D)
	be.SiLUForward(a.siluC, a.c, B*D)
	// 4. text embedding.
	be.LinearForward(a.y1, a.txt, P.YFC1.W, P.YFC1.B, Ts, Dt, D)
	be.GELUForward(a.y1g, a.y1, Ts*D)
	be.LinearForward(a.y, a.y1g, P.YFC2.W, P.YFC2.B, Ts, D, D)

	// 5. blocks.
	self := m.attnDims(N, 3*D, 3*D)
	cross := m.attnDims(S, D, 2*D)
	for l := range P.Blocks {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("model: forward: %w", err)
		}
		w, ba := &P.Blocks[l], &a.blocks[l]
		mod := ba.mod
		shiftMSA, scaleMSA, gateMSA := mod[0:], mod[D:], mod[2*D:]
		shiftMLP, scaleMLP, gateMLP := mod[3*D:], mod[4*D:], mod[5*D:]
		be.LinearForward(mod, a.siluC, w.AdaLN.W, w.AdaLN.B, B, D, 6*D)

		// h = h + gate_msa · SelfAttn(LN(h)·(1+scale_msa) + shift_msa)
		be.LayerNormForward(ba.xhat1, a.mean, ba.rstd1, a.h, T, D)
		be.ModulateForward(a.scrD, ba.xhat1, shiftMSA, scaleMSA, B, N, D, 6*D)
		be.LinearForward(ba.qkv, a.scrD, w.QKV.W, w.QKV.B, T, D, 3*D)
		be.AttentionForward(ba.attn, ba.lse1, ba.qkv, ba.qkv[D:], ba.qkv[2*D:], nil, self)
		be.LinearForward(ba.proj, ba.attn, w.Proj.W, w.Proj.B, T, D, D)
		be.GatedResidualForward(a.h, ba.proj, gateMSA, B, N, D, 6*D)

		// h = h + CrossAttn(LN(h), y, mask)
		be.LayerNormForward(ba.xhat2, a.mean, ba.rstd2, a.h, T, D)
		be.LinearForward(ba.cq, ba.xhat2, w.CrossQ.W, w.CrossQ.B, T, D, D)
		be.LinearForward(ba.ckv, a.y, w.CrossKV.W, w.CrossKV.B, Ts, D, 2*D)
		be.AttentionForward(ba.cattn, ba.lse2, ba.cq, ba.ckv, ba.ckv[D:], a.mask, cross)
		be.LinearForward(a.scrD, ba.cattn, w.CrossOut.W, w.CrossOut.B, T, D, D)
		be.ResidualForward(a.h, a.h, a.scrD, T*D)

		// h = h + gate_mlp · fc2(GELU(fc1(LN(h)·(1+scale_mlp) + shift_mlp)))
		be.LayerNormForward(ba.xhat3, a.mean, ba.rstd3, a.h, T, D)
		be.ModulateForward(a.scrD, ba.xhat3, shiftMLP, scaleMLP, B, N, D, 6*D)
		be.LinearForward(ba.f1, a.scrD, w.FC1.W, w.FC1.B, T, D, M)
		be.GELUForward(a.scrM, ba.f1, T*M)
		be.LinearForward(ba.f2, a.scrM, w.FC2.W, w.FC2.B, T, M, D)
		be.GatedResidualForward(a.h, ba.f2, gateMLP, B, N, D, 6*D)
	}

	// 6. final layer.
	be.LinearForward(a.fmod, a.siluC, P.FinalAdaLN.W, P.FinalAdaLN.B, B, D, 2*D)
	be.LayerNormForward(a.xhatF, a.mean, a.rstdF, a.h, T, D)
	be.ModulateForward(a.uF, a.xhatF, a.fmod, a.fmod[D:], B, N, D, 2*D)
	be.LinearForward(a.o, a.uF, P.Final.W, P.Final.B, T, D, Ko)
	// 7. unpatchify.
	be.UnpatchifyForward(a.out, a.o, m.patchDims(c.OutChannels))
	if err := m.sync(); err != nil {
		return nil, fmt.Errorf("model: forward: %w", err)
	}
	m.ready = true
	return a.out, nil
}

// Backward accumulates into Grads() the gradient of a scalar loss whose
// gradient with respect to the last Forward's output is dOut
// [B,Cout,F,H,W]; it also computes the input gradients (InputGrads). It is
// Forward's list of calls in reverse.
func (m *Model) Backward(ctx context.Context, dOut []float32) error {
	if !m.ready {
		return ErrNoForward
	}
	s := m.cur
	be, c, a, P, G := m.be, m.cfg, &m.act, m.P, m.G
	B, N, S, D, M, K, Ko, Dt := s.B, s.N, s.S, c.HiddenSize, c.MLPHidden(), c.PatchLen(), c.OutPatchLen(), c.TextDim
	T, Ts := B*N, B*S
	if len(dOut) != T*Ko {
		return fmt.Errorf("model: output gradient has %d values, want %d (the output's size)", len(dOut), T*Ko)
	}
	var hookErr error
	hook := func(lo, hi int) {
		if m.hook == nil || hookErr != nil {
			return
		}
		// The hook may read the range on the host (a TCP reducer does):
		// an asynchronous backend must have finished writing it.
		if hookErr = m.sync(); hookErr == nil {
			m.hook(lo, hi)
		}
	}

	// 7–6. unpatchify and final layer.
	kernels.Zero(be, a.do)
	be.UnpatchifyBackward(a.do, dOut, m.patchDims(c.OutChannels))
	kernels.Zero(be, a.d1)
	be.LinearBackward(a.d1, G.Final.W, G.Final.B, a.do, a.uF, P.Final.W, T, D, Ko)
	kernels.Zero(be, a.d2)
	kernels.Zero(be, a.dmod[:B*2*D])
	be.ModulateBackward(a.d2, a.dmod, a.dmod[D:], a.d1, a.xhatF, a.fmod[D:], B, N, D, 2*D)
	kernels.Zero(be, a.dh)
	be.LayerNormBackward(a.dh, a.d2, a.xhatF, a.rstdF, T, D)
	kernels.Zero(be, a.dsiluC)
	be.LinearBackward(a.dsiluC, G.FinalAdaLN.W, G.FinalAdaLN.B, a.dmod[:B*2*D], a.siluC, P.FinalAdaLN.W, B, D, 2*D)
	hook(P.FinalStart, len(m.grads))

	// 5. blocks, last to first.
	self := m.attnDims(N, 3*D, 3*D)
	cross := m.attnDims(S, D, 2*D)
	kernels.Zero(be, a.dy)
	for l := len(P.Blocks) - 1; l >= 0; l-- {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("model: backward: %w", err)
		}
		w, g, ba := &P.Blocks[l], &G.Blocks[l], &a.blocks[l]
		mod, dmod := ba.mod, a.dmod
		kernels.Zero(be, dmod)

		// MLP branch: h += gate_mlp · f2.
		kernels.Zero(be, a.d1)
		be.GatedResidualBackward(a.d1, dmod[5*D:], a.dh, ba.f2, mod[5*D:], B, N, D, 6*D)
		be.GELUForward(a.scrM, ba.f1, T*M) // recompute fc2's input
		kernels.Zero(be, a.dM1)
		be.LinearBackward(a.dM1, g.FC2.W, g.FC2.B, a.d1, a.scrM, w.FC2.W, T, M, D)
		kernels.Zero(be, a.dM2)
		be.GELUBackward(a.dM2, a.dM1, ba.f1, T*M)
		be.ModulateForward(a.scrD, ba.xhat3, mod[3*D:], mod[4*D:], B, N, D, 6*D) // recompute fc1's input
		kernels.Zero(be, a.d2)
		be.LinearBackward(a.d2, g.FC1.W, g.FC1.B, a.dM2, a.scrD, w.FC1.W, T, D, M)
		kernels.Zero(be, a.d3)
		be.ModulateBackward(a.d3, dmod[3*D:], dmod[4*D:], a.d2, ba.xhat3, mod[4*D:], B, N, D, 6*D)
		be.LayerNormBackward(a.dh, a.d3, ba.xhat3, ba.rstd3, T, D)

		// Cross-attention branch: h += proj(CrossAttn(LN(h), y, mask)).
		kernels.Zero(be, a.d1)
		be.LinearBackward(a.d1, g.CrossOut.W, g.CrossOut.B, a.dh, ba.cattn, w.CrossOut.W, T, D, D)
		kernels.Zero(be, a.d2)
		kernels.Zero(be, a.dckv)
		be.AttentionBackward(a.d2, a.dckv, a.dckv[D:], a.d1, ba.cq, ba.ckv, ba.ckv[D:], a.mask, ba.cattn, ba.lse2, cross)
		be.LinearBackward(a.dy, g.CrossKV.W, g.CrossKV.B, a.dckv, a.y, w.CrossKV.W, Ts, D, 2*D)
		kernels.Zero(be, a.d3)
		be.LinearBackward(a.d3, g.CrossQ.W, g.CrossQ.B, a.d2, ba.xhat2, w.CrossQ.W, T, D, D)
		be.LayerNormBackward(a.dh, a.d3, ba.xhat2, ba.rstd2, T, D)

		// Self-attention branch: h += gate_msa · proj(SelfAttn(modulated LN(h))).
		kernels.Zero(be, a.d1)
		be.GatedResidualBackward(a.d1, dmod[2*D:], a.dh, ba.proj, mod[2*D:], B, N, D, 6*D)
		kernels.Zero(be, a.d2)
		be.LinearBackward(a.d2, g.Proj.W, g.Proj.B, a.d1, ba.attn, w.Proj.W, T, D, D)
		kernels.Zero(be, a.dqkv)
		be.AttentionBackward(a.dqkv, a.dqkv[D:], a.dqkv[2*D:], a.d2, ba.qkv, ba.qkv[D:], ba.qkv[2*D:], nil, ba.attn, ba.lse1, self)
		be.ModulateForward(a.scrD, ba.xhat1, mod[0:], mod[D:], B, N, D, 6*D) // recompute qkv's input
		kernels.Zero(be, a.d3)
		be.LinearBackward(a.d3, g.QKV.W, g.QKV.B, a.dqkv, a.scrD, w.QKV.W, T, D, 3*D)
		kernels.Zero(be, a.d1)
		be.ModulateBackward(a.d1, dmod[0:], dmod[D:], a.d3, ba.xhat1, mod[D:], B, N, D, 6*D)
		be.LayerNormBackward(a.dh, a.d1, ba.xhat1, ba.rstd1, T, D)

		// adaLN modulation.
		be.LinearBackward(a.dsiluC, g.AdaLN.W, g.AdaLN.B, dmod, a.siluC, w.AdaLN.W, B, D, 6*D)
		hook(P.BlockRange[l][0], P.BlockRange[l][1])
	}

	// 4. text embedder.
	kernels.Zero(be, a.dy1g)
	be.LinearBackward(a.dy1g, G.YFC2.W, G.YFC2.B, a.dy, a.y1g, P.YFC2.W, Ts, D, D)
	kernels.Zero(be, a.dy1)
	be.GELUBackward(a.dy1, a.dy1g, a.y1, Ts*D)
	kernels.Zero(be, a.dtxt)
	be.LinearBackward(a.dtxt, G.YFC1.W, G.YFC1.B, a.dy1, a.txt, P.YFC1.W, Ts, Dt, D)
	// 3. timestep embedder.
	kernels.Zero(be, a.dc)
	be.SiLUBackward(a.dc, a.dsiluC, a.c, B*D)
	kernels.Zero(be, a.dt1s)
	be.LinearBackward(a.dt1s, G.TFC2.W, G.TFC2.B, a.dc, a.t1s, P.TFC2.W, B, D, D)
	kernels.Zero(be, a.dt1)
	be.SiLUBackward(a.dt1, a.dt1s, a.t1, B*D)
	be.LinearBackward(nil, G.TFC1.W, G.TFC1.B, a.dt1, a.temb, P.TFC1.W, B, TimestepDim, D)
	// 2–1. patch embedding (positions are fixed) and patchify.
	kernels.Zero(be, a.dpatches)
	be.LinearBackward(a.dpatches, G.PatchEmbed.W, G.PatchEmbed.B, a.dh, a.patches, P.PatchEmbed.W, T, K, D)
	kernels.Zero(be, a.dx)
	be.PatchifyBackward(a.dx, a.dpatches, m.patchDims(c.InChannels))
	if err := m.sync(); err != nil {
		return fmt.Errorf("model: backward: %w", err)
	}
	hook(0, P.EmbedEnd)
	if hookErr != nil {
		return fmt.Errorf("model: backward: %w", hookErr)
	}
	return nil
}
