package optim

import "fmt"

// EMA is an exponential moving average of the weights, the copy diffusion
// users sample from. Until StartStep it tracks the weights exactly; after,
// shadow ← decay·shadow + (1−decay)·params, in float32.
type EMA struct {
	Decay     float64
	StartStep int64
	Shadow    []float32

	device DeviceEMA // see OnDevice; nil: the host loop
}

// DeviceEMA is an optional backend capability (the CUDA backend): the EMA
// update where the buffers live, shadow ← decay·shadow + oneMinus·params
// with each product and the sum rounded to float32 (no fused multiply-add),
// and a plain copy when decay is 0. Without it the host loop runs, which
// on a GPU would migrate the weights to the host every step.
type DeviceEMA interface {
	EMAUpdate(shadow, params []float32, decay, oneMinus float32) error
}

// NewEMA starts an average at a copy of params.
func NewEMA(params []float32, decay float64, startStep int64) *EMA {
	return &EMA{Decay: decay, StartStep: startStep, Shadow: append([]float32(nil), params...)}
}

// OnDevice moves the average onto a backend: the shadow comes from alloc
// (when not nil; its values are kept) and updates run through dev. Call
// before the first Update or after loading the shadow.
func (e *EMA) OnDevice(dev DeviceEMA, alloc Allocator) {
	if alloc != nil {
		s := alloc.Alloc(len(e.Shadow))
		copy(s, e.Shadow)
		e.Shadow = s
	}
	e.device = dev
}

// Update folds params into the average after optimizer step `step` (the
// count of updates done so far, starting at 1).
func (e *EMA) Update(params []float32, step int64) error {
	if len(params) != len(e.Shadow) {
		return fmt.Errorf("optim: EMA holds %d weights, got %d", len(e.Shadow), len(params))
	}
	d, a := float32(e.Decay), float32(1-e.Decay)
	if step <= e.StartStep {
		d, a = 0, 1
	}
	if e.device != nil {
		return e.device.EMAUpdate(e.Shadow, params, d, a)
	}
	if d == 0 {
		copy(e.Shadow, params)
		return nil
	}
	forChunks(len(params), func(_, lo, hi int) {
		s := e.Shadow[lo:hi]
		for i, p := range params[lo:hi] {
			s[i] = d*s[i] + a*p
		}
	})
	return nil
}
