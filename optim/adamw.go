// Package optim holds the optimizer side of a training step, as loops over
// the model's flat parameter and gradient buffers: AdamW with PyTorch's
// semantics, clipping by global norm, NeMo's learning-rate schedules and an
// exponential moving average of the weights.
//
// None of the types is safe for concurrent use; the training loop owns them.
package optim

import (
	"fmt"
	"math"
)

// AdamW is torch.optim.AdamW (amsgrad=False, maximize=False), evaluated in
// float32 in the order (and with the fused multiply-adds) of torch's
// single-tensor CPU path, so results are bit-identical to PyTorch 1.13's:
//
//	p ← p·(1 − lr·wd)
//	m ← m·β1 + (1−β1)·g
//	v ← v·β2 + (1−β2)·g·g
//	p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε)
//
// M and V are the moments, laid out like the parameters; Step is the number
// of updates done (t of the next update is Step+1). All three are what a
// checkpoint saves.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	M, V                           []float32
	Step                           int64

	device DeviceAdamW // see OnDevice; nil: the host loop
}

// NewAdamW returns an AdamW for n parameters with zero moments.
func NewAdamW(n int, beta1, beta2, eps, weightDecay float64) *AdamW {
	return &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay,
		M: make([]float32, n), V: make([]float32, n)}
}

// Update applies one AdamW step with learning rate lr to params (in place)
// from grads. Both have the optimizer's length.
func (o *AdamW) Update(params, grads []float32, lr float64) error {
	if len(params) != len(o.M) || len(grads) != len(o.M) {
		return fmt.Errorf("optim: AdamW holds %d moments, got %d params and %d grads", len(o.M), len(params), len(grads))
	}
	o.Step++
	if o.device != nil {
		return o.device.AdamW(params, grads, o.M, o.V, lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.Step)
	}
	t := float64(o.Step)
	decay := float32(1 - lr*o.WeightDecay)
	b1, a1 := float32(o.Beta1), float32(1-o.Beta1)
	b2, a2 := float32(o.Beta2), float32(1-o.Beta2)
	bc1 := 1 - math.Pow(o.Beta1, t)
	bc2Sqrt := float32(math.Sqrt(1 - math.Pow(o.Beta2, t)))
	negStep := float32(-(lr / bc1))
	eps := float32(o.Eps)
	m, v := o.M, o.V
	forChunks(len(grads), func(_, lo, hi int) {
		update(params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi], decay, b1, a1, b2, a2, bc2Sqrt, negStep, eps)
	})
	return nil
}

// update is AdamW's element loop over one chunk.
func update(params, grads, m, v []float32, decay, b1, a1, b2, a2, bc2Sqrt, negStep, eps float32) {
	for i, g := range grads {
		p := params[i] * decay
		// torch's vectorised add_(g, alpha) and addcmul_ end in a fused
		// multiply-add; a float32·float32 product is exact in float64, so a
		// float64 add rounded once to float32 reproduces the fusion (double
		// rounding aside, rarer than 1 in 2^28). addcdiv_ is p + (s·m)/d.
		mi := float32(float64(m[i]*b1) + float64(a1)*float64(g))
		vi := float32(float64(v[i]*b2) + float64(a2*g)*float64(g))
		denom := float32(math.Sqrt(float64(vi)))/bc2Sqrt + eps
		params[i] = p + negStep*mi/denom
		m[i], v[i] = mi, vi
	}
}
