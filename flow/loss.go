package flow

import (
	"fmt"
	"math"
	"slices"
)

// Interpolate is NeMo's LinearInterpolationSchedule.forward: x_t =
// (1−σ_b)·x0 + σ_b·x1 for every element of sample b, evaluated as
// fl(fl(fl(1−σ)·x0) + fl(σ·x1)) with no fused multiply-add. x0 and x1 have
// the same length, a multiple of len(sigma).
func Interpolate(x0, x1, sigma []float32) []float32 {
	out := make([]float32, len(x0))
	per := len(x0) / len(sigma)
	for b, s := range sigma {
		oneMinus := float32(1 - s)
		for i := b * per; i < (b+1)*per; i++ {
			out[i] = float32(float32(oneMinus*x0[i]) + float32(s*x1[i]))
		}
	}
	return out
}

// BSMNTWWeights builds NeMo's bsmntw loss-weight table for T timesteps:
// w̃(t) = exp(−2((t − T/2)/T)²), w = w̃ − min w̃, scaled so the table sums
// to T. T = 1 gives NaN, as in NeMo (Config.Validate rejects T < 2).
func BSMNTWWeights(T int) []float32 {
	w := make([]float32, T)
	half := float32(float64(T) / 2)
	Tf := float32(T)
	for t := range w {
		x := float32(float32(float32(t)-half) / Tf)
		x = float32(x * x)
		w[t] = float32(math.Exp(float64(float32(-2 * x))))
	}
	lo := slices.Min(w)
	var sum float64
	for t := range w {
		w[t] = float32(w[t] - lo)
		sum += float64(w[t])
	}
	s := float32(sum)
	for t := range w {
		w[t] = float32(float32(w[t]*Tf) / s)
	}
	return w
}

// LossOutputs is compute_loss's 6-tuple.
type LossOutputs struct {
	WeightedLoss          *Tensor // loss·w per element, float32, pred's shape
	AverageWeightedLoss   float32 // mean over all elements (masked mean with apply_loss_mask)
	UnweightedLoss        *Tensor // loss per element
	AverageUnweightedLoss float32 // mean of loss (masked mean with apply_loss_mask)
	LossWeight            *Tensor // w, float32 [B,1,…,1] with pred's rank
	LossMask              *Tensor // the batch's loss_mask, untouched, or nil
}

// lossWeights returns the per-sample weights (§6 step 3).
func (p *Pipeline) lossWeights(sigma []float32) []float32 {
	w := make([]float32, len(sigma))
	switch {
	case !p.cfg.UseLossWeighting:
		for i := range w {
			w[i] = 1
		}
	case p.cfg.LossWeightingScheme == WeightingBSMNTW:
		T := p.cfg.NumTrainTimesteps
		for i, s := range sigma {
			f := float32(s * float32(T))
			idx := 0
			if !math.IsNaN(float64(f)) {
				idx = int(max(min(math.Trunc(float64(f)), float64(T-1)), 0))
			}
			w[i] = p.bsmntw[idx]
		}
	default: // linear: 1 + shift·σ, whatever sampler drew σ
		s := float32(p.cfg.FlowShift)
		for i, v := range sigma {
			w[i] = float32(1 + float32(s*v))
		}
	}
	return w
}

// mseLoss is the default adapter loss: (fl32(pred) − fl32(target))² per element.
func mseLoss(pred, target *Tensor) (*Tensor, error) {
	if !slices.Equal(pred.Shape, target.Shape) {
		return nil, fmt.Errorf("flow: prediction shape %v does not match target shape %v", pred.Shape, target.Shape)
	}
	out := NewTensor(Float32, pred.Shape...)
	for i, p := range pred.Data {
		d := float32(p - target.Data[i])
		out.Data[i] = float32(d * d)
	}
	return out, nil
}

// ComputeLoss is NeMo's compute_loss (§6): the adapter's per-element loss,
// weighted per sample by σ. batch may be nil. With Config.ApplyLossMask and
// a "loss_mask" in the batch, both averages are mask-weighted means.
func (p *Pipeline) ComputeLoss(pred, target *Tensor, sigma []float32, batch Batch) (*LossOutputs, error) {
	var loss *Tensor
	var err error
	if lc, ok := p.adapter.(LossComputer); ok {
		loss, err = lc.ComputeLoss(pred, target)
	} else {
		loss, err = mseLoss(pred, target)
	}
	if err != nil {
		return nil, err
	}
	if loss.Rank() == 0 || loss.Shape[0] != len(sigma) {
		return nil, fmt.Errorf("flow: loss shape %v does not start with batch size %d", loss.Shape, len(sigma))
	}
	var mask *Tensor
	if batch != nil {
		mask = batch.Tensor("loss_mask")
	}
	w := p.lossWeights(sigma)
	wshape := make([]int, loss.Rank())
	for i := range wshape {
		wshape[i] = 1
	}
	wshape[0] = len(sigma)
	out := &LossOutputs{
		WeightedLoss:   NewTensor(Float32, loss.Shape...),
		UnweightedLoss: loss,
		LossWeight:     &Tensor{Shape: wshape, DType: Float32, Data: w},
		LossMask:       mask,
	}
	per := loss.Numel() / len(sigma)
	for b, wb := range w {
		for i := b * per; i < (b+1)*per; i++ {
			out.WeightedLoss.Data[i] = float32(loss.Data[i] * wb)
		}
	}
	if p.cfg.ApplyLossMask && mask != nil {
		m, err := broadcastMask(mask, loss.Shape)
		if err != nil {
			return nil, err
		}
		out.AverageWeightedLoss, err = maskedMean(out.WeightedLoss.Data, m)
		if err != nil {
			return nil, err
		}
		out.AverageUnweightedLoss, _ = maskedMean(loss.Data, m)
		return out, nil
	}
	out.AverageWeightedLoss = mean32(out.WeightedLoss.Data)
	out.AverageUnweightedLoss = mean32(loss.Data)
	return out, nil
}

// mean32 is a float32 mean: summed in float64, rounded once (within about
// 1 ulp of torch's float32 reduction).
func mean32(x []float32) float32 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return float32(s / float64(len(x)))
}

func maskedMean(x, m []float32) (float32, error) {
	var s, n float64
	for i, v := range x {
		if m[i] != 0 {
			s += float64(v) * float64(m[i])
			n += float64(m[i])
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("flow: apply_loss_mask: loss_mask sums to zero, no element to average")
	}
	return float32(s / n), nil
}

// broadcastMask expands mask to shape with NumPy rules (mask's dims aligned
// to the right of shape after a leading batch dim match: a mask [B] or
// [B,1,…] applies per sample, a mask of shape applies per element).
func broadcastMask(mask *Tensor, shape []int) ([]float32, error) {
	src := mask.Float32s()
	ms := mask.Shape
	if len(ms) > len(shape) {
		return nil, fmt.Errorf("flow: loss_mask shape %v has more dims than the loss %v", ms, shape)
	}
	// Align left (batch first) by padding with trailing 1s, as a [B] mask
	// means one value per sample.
	full := slices.Clone(ms)
	for len(full) < len(shape) {
		full = append(full, 1)
	}
	for i := range shape {
		if full[i] != shape[i] && full[i] != 1 {
			return nil, fmt.Errorf("flow: loss_mask shape %v does not broadcast to the loss shape %v", ms, shape)
		}
	}
	n := numel(shape)
	out := make([]float32, n)
	idx := make([]int, len(shape))
	for k := range n {
		// index into the mask
		off := 0
		for d := range shape {
			off *= full[d]
			if full[d] != 1 {
				off += idx[d]
			}
		}
		out[k] = src[off]
		for d := len(shape) - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}
