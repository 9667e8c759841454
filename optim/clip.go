package optim

import "math"

// GlobalNorm is the L2 norm of the whole gradient buffer, summed in float64
// (per fixed-size chunk, then over chunks in order, so the result does not
// depend on the core count) and rounded once.
func GlobalNorm(grads []float32) float64 {
	partial := make([]float64, (len(grads)+chunk-1)/chunk)
	forChunks(len(grads), func(i, lo, hi int) {
		var s float64
		for _, g := range grads[lo:hi] {
			s += float64(g) * float64(g)
		}
		partial[i] = s
	})
	var s float64
	for _, p := range partial {
		s += p
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
		forChunks(len(grads), func(_, lo, hi int) {
			for i := range grads[lo:hi] {
				grads[lo+i] *= coef
			}
		})
	}
	return norm
}
