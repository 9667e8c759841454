package flow

import (
	"fmt"
	"slices"
)

// Tensor is a dense row-major array, the unit NeMo's batch dicts, adapters
// and models exchange. Float dtypes keep their values in Data as float32
// already rounded to the dtype; Int64 and Bool keep theirs in Ints (bools as
// 0/1). A Tensor is a plain value: nothing in flow mutates a Tensor it was
// given, and every Tensor flow returns is freshly allocated.
type Tensor struct {
	Shape []int
	DType DType
	Data  []float32 // float dtypes
	Ints  []int64   // Int64 and Bool
}

// NewTensor returns a tensor of the given dtype and shape filled with zeros.
func NewTensor(dtype DType, shape ...int) *Tensor {
	n := numel(shape)
	t := &Tensor{Shape: slices.Clone(shape), DType: dtype}
	if dtype.IsFloat() {
		t.Data = make([]float32, n)
	} else {
		t.Ints = make([]int64, n)
	}
	return t
}

// FromFloat32 wraps data (not copied) as a tensor of the given shape after
// rounding every value to dtype in place. It panics if len(data) does not
// match the shape: that is a programming error.
func FromFloat32(dtype DType, data []float32, shape ...int) *Tensor {
	if numel(shape) != len(data) {
		panic(fmt.Sprintf("flow: FromFloat32: %d values for shape %v", len(data), shape))
	}
	if dtype != Float32 {
		for i, v := range data {
			data[i] = RoundTo(dtype, v)
		}
	}
	return &Tensor{Shape: slices.Clone(shape), DType: dtype, Data: data}
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return numel(t.Shape) }

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.Shape) }

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	if t == nil {
		return nil
	}
	return &Tensor{Shape: slices.Clone(t.Shape), DType: t.DType, Data: slices.Clone(t.Data), Ints: slices.Clone(t.Ints)}
}

// To returns a copy converted to dtype d, rounding floats as torch's .to(d)
// does (round to nearest even). Integer ↔ float conversions are exact for
// the small values (masks, ids) the pipeline converts.
func (t *Tensor) To(d DType) *Tensor {
	out := &Tensor{Shape: slices.Clone(t.Shape), DType: d}
	switch {
	case t.DType.IsFloat() && d.IsFloat():
		out.Data = make([]float32, len(t.Data))
		for i, v := range t.Data {
			out.Data[i] = RoundTo(d, v)
		}
	case t.DType.IsFloat():
		out.Ints = make([]int64, len(t.Data))
		for i, v := range t.Data {
			if d == Bool {
				if v != 0 {
					out.Ints[i] = 1
				}
			} else {
				out.Ints[i] = int64(v)
			}
		}
	case d.IsFloat():
		out.Data = make([]float32, len(t.Ints))
		for i, v := range t.Ints {
			out.Data[i] = RoundTo(d, float32(v))
		}
	default:
		out.Ints = slices.Clone(t.Ints)
		if d == Bool {
			for i, v := range out.Ints {
				if v != 0 {
					out.Ints[i] = 1
				}
			}
		}
	}
	return out
}

// Float32s returns the values as float32 (a copy for integer tensors, the
// backing slice for float tensors).
func (t *Tensor) Float32s() []float32 {
	if t.DType.IsFloat() {
		return t.Data
	}
	out := make([]float32, len(t.Ints))
	for i, v := range t.Ints {
		out[i] = float32(v)
	}
	return out
}

func (t *Tensor) String() string {
	if t == nil {
		return "<nil tensor>"
	}
	return fmt.Sprintf("Tensor(%v, %v)", t.Shape, t.DType)
}

func numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// Batch is one micro-batch, keyed like NeMo's collated batch dict:
// "video_latents" [B,C,F,H,W] or "image_latents" [B,C,H,W], "text_embeddings",
// "text_mask", "loss_mask", "data_type" ("video" or "image"), and
// adapter-specific keys ("pooled_prompt_embeds", "audio_latents",
// "context_latents", …). Values are *Tensor, string, or []*Tensor
// (context_latents); a missing key is absent, never a nil entry.
type Batch map[string]any

// Tensor returns batch[key] as a tensor, or nil if absent or not a tensor.
func (b Batch) Tensor(key string) *Tensor {
	t, _ := b[key].(*Tensor)
	return t
}
