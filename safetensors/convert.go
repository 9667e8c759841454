package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// FromFloat32 builds a tensor of dtype F32, F16 or BF16 from float32 values
// (F16 and BF16 round to nearest even). len(v) must match shape.
func FromFloat32(name string, dtype DType, shape []int, v []float32) (Tensor, error) {
	t := Tensor{Name: name, DType: dtype, Shape: append([]int(nil), shape...)}
	if n := t.Numel(); n != len(v) {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: %d values for shape %v (%d elements)", name, len(v), shape, n)
	}
	switch dtype {
	case F32:
		t.Data = make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(x))
		}
	case BF16:
		t.Data = make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(t.Data[2*i:], Float32ToBF16(x))
		}
	case F16:
		t.Data = make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(t.Data[2*i:], Float32ToF16(x))
		}
	default:
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: dtype %s is not a float type", name, dtype)
	}
	return t, nil
}

// FromInt64 builds an I64 tensor.
func FromInt64(name string, shape []int, v []int64) (Tensor, error) {
	t := Tensor{Name: name, DType: I64, Shape: append([]int(nil), shape...)}
	if n := t.Numel(); n != len(v) {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: %d values for shape %v (%d elements)", name, len(v), shape, n)
	}
	t.Data = make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(t.Data[8*i:], uint64(x))
	}
	return t, nil
}

// FromBytes builds a U8 or BOOL tensor (BOOL values must be 0 or 1).
func FromBytes(name string, dtype DType, shape []int, v []byte) (Tensor, error) {
	t := Tensor{Name: name, DType: dtype, Shape: append([]int(nil), shape...), Data: append([]byte(nil), v...)}
	if dtype != U8 && dtype != Bool {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: dtype %s is not U8 or BOOL", name, dtype)
	}
	if n := t.Numel(); n != len(v) {
		return Tensor{}, fmt.Errorf("safetensors: tensor %q: %d values for shape %v (%d elements)", name, len(v), shape, n)
	}
	if dtype == Bool {
		for i, b := range v {
			if b > 1 {
				return Tensor{}, fmt.Errorf("safetensors: tensor %q: BOOL element %d is %d, not 0 or 1", name, i, b)
			}
		}
	}
	return t, nil
}

// Float32s converts an F32, F16 or BF16 tensor to float32 values.
func (t Tensor) Float32s() ([]float32, error) {
	n := t.Numel()
	out := make([]float32, n)
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	case F16:
		for i := range out {
			out[i] = F16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, not a float type", t.Name, t.DType)
	}
	return out, nil
}

// Int64s converts an I64, U8 or BOOL tensor to int64 values.
func (t Tensor) Int64s() ([]int64, error) {
	out := make([]int64, t.Numel())
	switch t.DType {
	case I64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	case U8, Bool:
		for i := range out {
			out[i] = int64(t.Data[i])
		}
	default:
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, not an integer type", t.Name, t.DType)
	}
	return out, nil
}

// BF16ToFloat32 widens a bfloat16 bit pattern.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBF16 rounds to the nearest bfloat16, ties to even; NaN stays NaN.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40 // keep sign, force a quiet NaN
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToFloat32 widens an IEEE half-precision bit pattern (subnormals, infinities and NaN included).
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: man · 2^-24
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// Float32ToF16 rounds to the nearest half-precision value, ties to even;
// values beyond the range become ±Inf, NaN stays NaN.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign // underflows to ±0
		}
		man |= 0x800000 // implicit bit
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := man & (1<<shift - 1)
		r := man >> shift
		if rest > half || (rest == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rest := man & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is the right rounding (up to Inf)
	}
	return sign | uint16(r)
}
