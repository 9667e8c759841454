package model

// shape is the batch geometry the activations are laid out for.
type shape struct {
	B, N, S    int // samples, image/video tokens, text tokens
	Fp, Hp, Wp int // token grid (N = Fp·Hp·Wp)
}

// activations are the values forward saves for backward, plus the scratch
// both passes share, as named views over two arenas. Shapes are noted as in
// llm.c. Only the LN outputs (not their inputs) are kept: LN backward needs
// just its output and rstd, so the residual stream h is a single buffer
// updated in place. The modulated LN outputs (a, u) and the MLP's GELU
// output are recomputed in backward instead of stored.
//
// The tensors marked [store] are the bulk of the memory (about 15·B·N·D
// values per block): they come from the backend's activation storage when
// it has one (kernels.ActivationAllocator; bf16 on the CUDA
// mixed-precision backend), which the host never reads. Everything the
// host writes or reads (inputs, positions, the output, input gradients),
// the residual stream, statistics, modulations and every gradient stay
// float32.
type activations struct {
	patches []float32 // (B, N, K) patchified latents
	pos     []float32 // (N, D) position table for the current token grid
	temb    []float32 // (B, 256) timestep sinusoid
	t1      []float32 // (B, D) t_embedder.fc1 output
	t1s     []float32 // (B, D) SiLU(t1)
	c       []float32 // (B, D) timestep embedding
	siluC   []float32 // (B, D) SiLU(c), the input of every adaLN linear
	txt     []float32 // (B, S, Dt) copy of the text input
	mask    []float32 // (B, S) copy of the text mask (all ones when absent)
	y1      []float32 // (B, S, D) y_embedder.fc1 output
	y1g     []float32 // (B, S, D) GELU(y1)
	y       []float32 // (B, S, D) text embedding
	h       []float32 // (B, N, D) residual stream, updated in place
	blocks  []blockActs
	fmod    []float32 // (B, 2D) final adaLN modulation: shift, scale
	mean    []float32 // (B, N) LN means (not needed by backward; one scratch)
	xhatF   []float32 // (B, N, D) final LN output [store]
	rstdF   []float32 // (B, N)
	uF      []float32 // (B, N, D) modulated final LN output [store]
	o       []float32 // (B, N, pt·p·p·Cout) final linear output
	out     []float32 // (B, Cout, F, H, W) model output
	scrD    []float32 // (B, N, D) scratch: modulated LN output, cross-attn proj output [store]
	scrM    []float32 // (B, N, M) scratch: GELU(fc1) output [store]

	// Gradient scratch, reused by every layer (backward accumulates, so each
	// is cleared before use).
	dh       []float32 // (B, N, D) gradient of the residual stream
	d1       []float32 // (B, N, D)
	d2       []float32 // (B, N, D)
	d3       []float32 // (B, N, D)
	dqkv     []float32 // (B, N, 3D)
	dM1      []float32 // (B, N, M)
	dM2      []float32 // (B, N, M)
	dckv     []float32 // (B, S, 2D)
	dy       []float32 // (B, S, D) gradient of y, summed over blocks
	dy1g     []float32 // (B, S, D)
	dy1      []float32 // (B, S, D)
	dtxt     []float32 // (B, S, Dt) gradient of the text input
	dmod     []float32 // (B, 6D)
	dsiluC   []float32 // (B, D) summed over every adaLN
	dc       []float32 // (B, D)
	dt1s     []float32 // (B, D)
	dt1      []float32 // (B, D)
	do       []float32 // (B, N, pt·p·p·Cout)
	dpatches []float32 // (B, N, K)
	dx       []float32 // (B, Cin, F, H, W) gradient of the latent input
}

// blockActs is what one block's forward saves ([store]: see activations).
type blockActs struct {
	mod   []float32 // (B, 6D) shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
	xhat1 []float32 // (B, N, D) LN before self-attention [store]
	rstd1 []float32 // (B, N)
	qkv   []float32 // (B, N, 3D) [store]
	attn  []float32 // (B, N, D) self-attention output before proj [store]
	lse1  []float32 // (B, heads, N) self-attention log-sum-exp
	proj  []float32 // (B, N, D) attn.proj output (gated into h) [store]
	xhat2 []float32 // (B, N, D) LN before cross-attention [store]
	rstd2 []float32 // (B, N)
	cq    []float32 // (B, N, D) cross-attention queries [store]
	ckv   []float32 // (B, S, 2D) cross-attention keys, values [store]
	cattn []float32 // (B, N, D) cross-attention output before proj [store]
	lse2  []float32 // (B, heads, N)
	xhat3 []float32 // (B, N, D) LN before the MLP [store]
	rstd3 []float32 // (B, N)
	f1    []float32 // (B, N, M) mlp.fc1 output [store]
	f2    []float32 // (B, N, D) mlp.fc2 output (gated into h) [store]
}

// arena hands out consecutive views of one buffer; with a nil buffer it
// only counts.
type arena struct {
	buf []float32
	off int
}

func (a *arena) take(n int) []float32 {
	a.off += n
	if a.buf == nil {
		return nil
	}
	return a.buf[a.off-n : a.off : a.off]
}

// layout lays every activation out densely for shape s, the [store] ones
// over st and the rest over ar (or counts the values needed when an arena
// has no buffer). ar and st may be the same arena.
func (act *activations) layout(c Config, s shape, ar, st *arena) {
	D, M, K, Ko, Dt, H := c.HiddenSize, c.MLPHidden(), c.PatchLen(), c.OutPatchLen(), c.TextDim, c.NumHeads
	B, N, S := s.B, s.N, s.S
	T, Ts := B*N, B*S
	act.patches = ar.take(T * K)
	act.pos = ar.take(N * D)
	act.temb = ar.take(B * TimestepDim)
	act.t1, act.t1s, act.c, act.siluC = ar.take(B*D), ar.take(B*D), ar.take(B*D), ar.take(B*D)
	act.txt, act.mask = ar.take(Ts*Dt), ar.take(Ts)
	act.y1, act.y1g, act.y = ar.take(Ts*D), ar.take(Ts*D), ar.take(Ts*D)
	act.h = ar.take(T * D)
	if len(act.blocks) != c.Depth {
		act.blocks = make([]blockActs, c.Depth)
	}
	for l := range act.blocks {
		b := &act.blocks[l]
		b.mod = ar.take(B * 6 * D)
		b.xhat1, b.rstd1 = st.take(T*D), ar.take(T)
		b.qkv = st.take(T * 3 * D)
		b.attn, b.lse1, b.proj = st.take(T*D), ar.take(B*H*N), st.take(T*D)
		b.xhat2, b.rstd2 = st.take(T*D), ar.take(T)
		b.cq, b.ckv, b.cattn, b.lse2 = st.take(T*D), st.take(Ts*2*D), st.take(T*D), ar.take(B*H*N)
		b.xhat3, b.rstd3 = st.take(T*D), ar.take(T)
		b.f1, b.f2 = st.take(T*M), st.take(T*D)
	}
	act.fmod = ar.take(B * 2 * D)
	act.mean = ar.take(T)
	act.xhatF, act.rstdF, act.uF = st.take(T*D), ar.take(T), st.take(T*D)
	act.o = ar.take(T * Ko)
	act.out = ar.take(T * Ko)
	act.scrD, act.scrM = st.take(T*D), st.take(T*M)

	act.dh, act.d1, act.d2, act.d3 = ar.take(T*D), ar.take(T*D), ar.take(T*D), ar.take(T*D)
	act.dqkv = ar.take(T * 3 * D)
	act.dM1, act.dM2 = ar.take(T*M), ar.take(T*M)
	act.dckv = ar.take(Ts * 2 * D)
	act.dy, act.dy1g, act.dy1 = ar.take(Ts*D), ar.take(Ts*D), ar.take(Ts*D)
	act.dtxt = ar.take(Ts * Dt)
	act.dmod = ar.take(B * 6 * D)
	act.dsiluC, act.dc, act.dt1s, act.dt1 = ar.take(B*D), ar.take(B*D), ar.take(B*D), ar.take(B*D)
	act.do = ar.take(T * Ko)
	act.dpatches = ar.take(T * K)
	act.dx = ar.take(T * K)
}
