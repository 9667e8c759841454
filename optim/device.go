package optim

import "math"

// DeviceAdamW is an optional capability of a kernels backend (found by type
// assertion, e.g. the CUDA backend): the AdamW update run where the buffers
// live, with optim.AdamW's arithmetic and order (step = t, from 1). Without
// it the host loop runs, which on a GPU would migrate every buffer to the
// host each step.
type DeviceAdamW interface {
	AdamW(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float64, step int64) error
}

// DeviceNorm is an optional backend capability for clipping on the device:
// SumSquares returns Σ buf² accumulated in float64, Scale multiplies in place.
type DeviceNorm interface {
	SumSquares(buf []float32) float64
	Scale(buf []float32, s float32)
}

// Allocator gives buffers the backend's ops can use (kernels.Allocator's
// method, restated here so optim imports no kernels package).
type Allocator interface {
	Alloc(n int) []float32
}

// OnDevice moves the optimizer onto a backend: moments come from alloc
// (when not nil; their values are kept) and updates run through dev (when
// not nil). Call before the first Update or after loading moments.
func (o *AdamW) OnDevice(dev DeviceAdamW, alloc Allocator) {
	if alloc != nil {
		m, v := alloc.Alloc(len(o.M)), alloc.Alloc(len(o.V))
		copy(m, o.M)
		copy(v, o.V)
		o.M, o.V = m, v
	}
	o.device = dev
}

// ClipGradNormOn is ClipGradNorm through a device's SumSquares and Scale
// (dev nil: the host loops).
func ClipGradNormOn(dev DeviceNorm, grads []float32, maxNorm float64) float64 {
	if dev == nil {
		return ClipGradNorm(grads, maxNorm)
	}
	norm := float64(float32(math.Sqrt(dev.SumSquares(grads))))
	if maxNorm <= 0 {
		return norm
	}
	if coef := float32(maxNorm / (norm + 1e-6)); coef < 1 {
		dev.Scale(grads, coef)
	}
	return norm
}
