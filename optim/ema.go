package optim

// EMA is an exponential moving average of the weights, the copy diffusion
// users sample from. Until StartStep it tracks the weights exactly; after,
// shadow ← decay·shadow + (1−decay)·params, in float32.
type EMA struct {
	Decay     float64
	StartStep int64
	Shadow    []float32
}

// NewEMA starts an average at a copy of params.
func NewEMA(params []float32, decay float64, startStep int64) *EMA {
	return &EMA{Decay: decay, StartStep: startStep, Shadow: append([]float32(nil), params...)}
}

// Update folds params into the average after optimizer step `step` (the
// count of updates done so far, starting at 1).
func (e *EMA) Update(params []float32, step int64) {
	if step <= e.StartStep {
		copy(e.Shadow, params)
		return
	}
	d, a := float32(e.Decay), float32(1-e.Decay)
	forChunks(len(params), func(_, lo, hi int) {
		s := e.Shadow[lo:hi]
		for i, p := range params[lo:hi] {
			s[i] = d*s[i] + a*p
		}
	})
}
