package optim

import "math"

// GlobalNorm is the L2 norm of the whole gradient buffer, summed in float64
// and rounded once.
func GlobalNorm(grads []float32) float64 {
	var s float64
	for _, g := range grads {
		s += float64(g) * float64(g)
	}
	return float64(float32(math.Sqrt(s)))
}

// ClipGradNorm scales grads in place so their global L2 norm is at most
// maxNorm, as torch.nn.utils.clip_grad_norm_ does (coefficient
// maxNorm/(norm+1e-6), applied only when below 1), and returns the norm
// before clipping, which is what training logs report. maxNorm ≤ 0 only
// measures.
func ClipGradNorm(grads []float32, maxNorm float64) float64 {
	norm := GlobalNorm(grads)
	if maxNorm <= 0 {
		return norm
	}
	coef := float32(maxNorm / (norm + 1e-6))
	if coef < 1 {
		for i := range grads {
			grads[i] *= coef
		}
	}
	return norm
}
