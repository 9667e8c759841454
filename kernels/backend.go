// Package kernels owns fmtrain's numerical operations: the Backend interface
// that every device implements (GEMM plus a forward/backward pair for each op
// FM-DiT needs), a registry of backends by name, a slow plain-Go Reference
// implementation that every fast path is checked against, and the CPU backend
// ("cpu": OpenBLAS through purego when libopenblas.so.0 loads, a parallel
// pure-Go GEMM otherwise).
//
// Conventions (llm.c's): all tensors are row-major float32 slices; arguments
// are outputs first, then inputs, then weights, then sizes. Forward ops
// overwrite their outputs. Backward ops take the gradients they produce first
// (a "d" prefix means "gradient of"), then the incoming gradient, then what
// forward saved, and they ACCUMULATE (+=) into every gradient they produce, so
// callers zero gradient buffers once, in one place. A nil gradient output
// means "not needed" wherever the doc says so.
//
// A Backend value is not safe for concurrent use: it is driven by one
// goroutine at a time (like a CUDA stream). Open a second one for a second
// model. Inside each call the CPU backend spreads the work over all cores.
package kernels

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Backend is the small required interface of a compute device. Shapes are
// given by the sizes after the slices; slices may be longer than needed.
type Backend interface {
	// Name is the registered name ("cpu", "reference", "cuda").
	Name() string

	// Gemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices,
	// op(A) [m,k], op(B) [k,n], C [m,n], with leading dimensions (row
	// strides) lda, ldb, ldc. transA means A is stored [k,m]; transB means
	// B is stored [n,k]. beta == 0 ignores the old contents of C.
	Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	// GemmBatched runs batch independent Gemms; the i-th uses A[i*strideA:],
	// B[i*strideB:], C[i*strideC:].
	GemmBatched(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int)

	// LinearForward: out[rows,outDim] = in[rows,inDim]·weight[outDim,inDim]^T + bias[outDim].
	// bias may be nil.
	LinearForward(out, in, weight, bias []float32, rows, inDim, outDim int)
	// LinearBackward accumulates din[rows,inDim], dweight[outDim,inDim] and
	// dbias[outDim] from dout[rows,outDim]. din and dbias may be nil.
	LinearBackward(din, dweight, dbias, dout, in, weight []float32, rows, inDim, outDim int)

	// LayerNormForward normalises each row of in[rows,cols] (no affine,
	// eps LayerNormEps, biased variance) and saves mean[rows], rstd[rows].
	LayerNormForward(out, mean, rstd, in []float32, rows, cols int)
	// LayerNormBackward accumulates din from dout, forward's normalised
	// output out and rstd (out and rstd are all it needs, so callers keep
	// the LN output and may drop its input).
	LayerNormBackward(din, dout, out, rstd []float32, rows, cols int)

	// ModulateForward: out[b,n,:] = in[b,n,:]·(1+scale[b,:]) + shift[b,:] for
	// in [B,N,D]; row b of shift and scale starts at b*modStride (they are
	// chunks of an adaLN modulation [B,k·D]).
	ModulateForward(out, in, shift, scale []float32, B, N, D, modStride int)
	// ModulateBackward accumulates din, dshift, dscale (dshift and dscale use
	// modStride like shift and scale).
	ModulateBackward(din, dshift, dscale, dout, in, scale []float32, B, N, D, modStride int)

	// GatedResidualForward: h[b,n,:] += gate[b,:]·y[b,n,:] (in place on the
	// residual stream h [B,N,D]); row b of gate starts at b*gateStride.
	GatedResidualForward(h, y, gate []float32, B, N, D, gateStride int)
	// GatedResidualBackward accumulates dy and dgate from dh (the gradient
	// of the residual stream, which also flows on unchanged: callers keep it).
	GatedResidualBackward(dy, dgate, dh, y, gate []float32, B, N, D, gateStride int)

	// ResidualForward: out = in1 + in2 elementwise (out may alias in1).
	ResidualForward(out, in1, in2 []float32, n int)
	// ResidualBackward accumulates dout into din1 and din2 (either may be nil).
	ResidualBackward(din1, din2, dout []float32, n int)

	// GELUForward: out = GELU(in), tanh form.
	GELUForward(out, in []float32, n int)
	// GELUBackward accumulates din = dout·GELU'(in).
	GELUBackward(din, dout, in []float32, n int)
	// SiLUForward: out = in·sigmoid(in).
	SiLUForward(out, in []float32, n int)
	// SiLUBackward accumulates din = dout·SiLU'(in).
	SiLUBackward(din, dout, in []float32, n int)

	// AttentionForward computes softmax(q·k^T·Scale + mask) v per batch
	// sample and head (see AttentionDims for the layout) into out, and saves
	// the log-sum-exp of each score row in lse [B,Heads,Nq]. mask [B,Nk] may
	// be nil (keep all); a zero entry hides that key. A sample whose mask is
	// all zero gets zero output. Implementations hold at most one head's
	// [Nq,Nk] score matrix per worker at a time.
	AttentionForward(out, lse, q, k, v, mask []float32, d AttentionDims)
	// AttentionBackward accumulates dq, dk, dv from dout, recomputing the
	// probabilities from q, k and lse. Fully masked samples get no gradient.
	AttentionBackward(dq, dk, dv, dout, q, k, v, mask, out, lse []float32, d AttentionDims)

	// PatchifyForward gathers latents x [B,C,F,H,W] into patches
	// [B,N,C·pt·p·p] (fm-dit.md step 1).
	PatchifyForward(out, x []float32, d PatchDims)
	// PatchifyBackward accumulates dx from dpatches (the scatter inverse).
	PatchifyBackward(dx, dout []float32, d PatchDims)
	// UnpatchifyForward scatters o [B,N,pt·p·p·C] (channel last inside a
	// patch) into out [B,C,F,H,W] (fm-dit.md step 7).
	UnpatchifyForward(out, o []float32, d PatchDims)
	// UnpatchifyBackward accumulates do from dout [B,C,F,H,W].
	UnpatchifyBackward(do, dout []float32, d PatchDims)

	// MSEForward returns mean((pred-target)²) over n elements, accumulated in float64.
	MSEForward(pred, target []float32, n int) float64
	// MSEBackward accumulates dpred += scale·2·(pred-target)/n.
	MSEBackward(dpred, pred, target []float32, n int, scale float32)
}

// LayerNormEps is the epsilon of every layer norm in FM-DiT.
const LayerNormEps = 1e-6

// AttentionDims describes one multi-head attention call. Tensor q holds
// sample b, token i, head h at q[b*Nq*QRow + i*QRow + h*HeadDim : +HeadDim]
// (k, v and out likewise with Nk/KRow, Nk/VRow, Nq/ORow), so packed
// projections (q, k, v side by side in one [B,N,3D] buffer) are passed as
// offset slices of the same buffer with a row stride of 3D.
type AttentionDims struct {
	B, Heads, Nq, Nk, HeadDim int
	QRow, KRow, VRow, ORow    int
	// Scale multiplies the scores, normally 1/sqrt(HeadDim).
	Scale float32
}

// PatchDims describes latents [B,C,F,H,W] cut into patches of pt×p×p.
type PatchDims struct {
	B, C, F, H, W int
	P, PT         int
}

// Tokens is N = (F/PT)·(H/P)·(W/P).
func (d PatchDims) Tokens() int { return (d.F / d.PT) * (d.H / d.P) * (d.W / d.P) }

// PatchLen is the features per patch, C·pt·p·p.
func (d PatchDims) PatchLen() int { return d.C * d.PT * d.P * d.P }

// Validate reports sizes that do not cut into whole patches.
func (d PatchDims) Validate() error {
	switch {
	case d.B <= 0 || d.C <= 0 || d.F <= 0 || d.H <= 0 || d.W <= 0 || d.P <= 0 || d.PT <= 0:
		return fmt.Errorf("kernels: patch dims must be positive, got %+v", d)
	case d.H%d.P != 0 || d.W%d.P != 0:
		return fmt.Errorf("kernels: H (%d) and W (%d) must be multiples of patch_size (%d)", d.H, d.W, d.P)
	case d.F%d.PT != 0:
		return fmt.Errorf("kernels: F (%d) must be a multiple of patch_size_t (%d)", d.F, d.PT)
	}
	return nil
}

// Closer is implemented by backends that hold resources (threads, device
// memory); callers that Open a backend Close it when done if it implements Closer.
type Closer interface {
	Close() error
}

// Allocator is implemented by backends whose ops need buffers from a
// particular allocator (e.g. CUDA managed memory); the model allocates its
// parameter, gradient and activation buffers through it when present and
// with make() otherwise.
type Allocator interface {
	Alloc(n int) []float32
}

// ActivationAllocator is implemented by backends that store activations in
// a narrower type than float32: the CUDA mixed-precision backend keeps them
// as bf16, which halves their memory and traffic. AllocActivations returns
// room for n activation values as a []float32 that is a handle, not memory:
// only the backend's own ops may read or write it, its views (subslices)
// name the same values, and the host must never touch it (a host access
// faults). Ops take such buffers where they take activations (their
// documentation says which; a gradient never may); an op given one where
// it cannot take it fails with an error naming the argument. An error
// means the backend has no such storage to give (switched off, or short of
// device memory); callers then use Alloc or make.
type ActivationAllocator interface {
	AllocActivations(n int) ([]float32, error)
}

// Synchronizer is implemented by asynchronous backends: Synchronize returns
// once every op issued so far has finished and its results are visible to
// the host. Callers call it before reading outputs on the host.
type Synchronizer interface {
	Synchronize() error
}

// Zeroer is implemented by backends whose buffers should be cleared on the
// device (e.g. CUDA managed memory, where a host-side clear would migrate
// the pages). Use the Zero helper, which falls back to clear().
type Zeroer interface {
	Zero(buf []float32)
}

// Zero sets buf to zero with be's Zeroer when it has one, else on the host.
func Zero(be Backend, buf []float32) {
	if z, ok := be.(Zeroer); ok {
		z.Zero(buf)
		return
	}
	clear(buf)
}

// AdamWStepper is implemented by backends that run the AdamW update where
// the parameters live (a GPU), so the host never touches them. step counts
// from 1, and the arithmetic is optim.AdamW.Update's (torch's).
type AdamWStepper interface {
	AdamW(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float64, step int64) error
}

// ErrNotForShape is returned by an optional fused path that declines a
// particular shape; the caller falls back to the generic ops (the role of
// database/sql/driver.ErrSkip).
var ErrNotForShape = errors.New("kernels: fused path not available for this shape")

// Factory opens a new backend instance.
type Factory func() (Backend, error)

var (
	registryMu sync.Mutex
	registry   = map[string]Factory{}
)

// Register makes a backend available under name. Registering a name twice
// panics (a programming error, as in database/sql).
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if f == nil {
		panic("kernels: Register factory is nil for " + name)
	}
	if _, dup := registry[name]; dup {
		panic("kernels: Register called twice for " + name)
	}
	registry[name] = f
}

// Names lists the registered backends, sorted.
func Names() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open returns a new instance of the backend registered as name. An unknown
// name is an error listing the known ones.
func Open(name string) (Backend, error) {
	registryMu.Lock()
	f, ok := registry[name]
	registryMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("kernels: unknown backend %q (known: %v)", name, Names())
	}
	b, err := f()
	if err != nil {
		return nil, fmt.Errorf("kernels: opening backend %q: %w", name, err)
	}
	return b, nil
}
