package flow

import (
	"fmt"
	"math"
)

// DType is the element type of a Tensor. Float tensors always store their
// values as float32 that are already rounded to the dtype (a bfloat16 tensor
// holds float32 values whose low 16 bits are zero), so arithmetic on them is
// plain float32 arithmetic, exactly as torch's CPU kernels upcast.
type DType int

// The dtypes NeMo's pipeline and its adapters produce. The zero value is
// invalid on purpose.
const (
	Float32 DType = 1 + iota
	BFloat16
	Float16
	Int64
	Bool
)

// String returns torch's short name of the dtype ("float32", "bfloat16", …).
func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case BFloat16:
		return "bfloat16"
	case Float16:
		return "float16"
	case Int64:
		return "int64"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// IsFloat reports whether values of d live in Tensor.Data (else Tensor.Ints).
func (d DType) IsFloat() bool { return d == Float32 || d == BFloat16 || d == Float16 }

// ParseDType maps torch's names ("float32", "bfloat16", "bf16", "float16",
// "fp16", "int64", "bool", optionally prefixed "torch.") to a DType.
func ParseDType(s string) (DType, error) {
	switch s {
	case "float32", "fp32", "float", "torch.float32":
		return Float32, nil
	case "bfloat16", "bf16", "torch.bfloat16":
		return BFloat16, nil
	case "float16", "fp16", "half", "torch.float16":
		return Float16, nil
	case "int64", "long", "torch.int64":
		return Int64, nil
	case "bool", "torch.bool":
		return Bool, nil
	}
	return 0, fmt.Errorf("flow: unknown dtype %q (want float32, bfloat16, float16, int64 or bool)", s)
}

// RoundBF16 rounds a float32 to the nearest bfloat16 (ties to even), as
// torch's .to(torch.bfloat16) does: keep the top 16 bits after adding
// 0x7FFF plus the lowest kept bit. NaN stays NaN.
func RoundBF16(x float32) float32 {
	if x != x {
		return x
	}
	b := math.Float32bits(x)
	b += 0x7FFF + ((b >> 16) & 1)
	return math.Float32frombits(b & 0xFFFF0000)
}

// RoundF16 rounds a float32 to the nearest IEEE half (ties to even),
// overflowing to ±Inf above 65504 and producing subnormals below 2^-14.
func RoundF16(x float32) float32 {
	if x != x || math.IsInf(float64(x), 0) || x == 0 {
		return x
	}
	f := float64(x)
	a := math.Abs(f)
	if a >= 65520 { // the midpoint between 65504 and 2^16 rounds up to Inf
		return float32(math.Copysign(math.Inf(1), f))
	}
	_, e := math.Frexp(a) // a = m·2^e, m in [0.5,1)
	// Spacing of halves around a: 2^(e-11) for normal numbers, 2^-24 below 2^-14.
	exp := e - 11
	if exp < -24 {
		exp = -24
	}
	q := math.Ldexp(1, exp)
	r := math.RoundToEven(a/q) * q
	return float32(math.Copysign(r, f))
}

// RoundTo rounds x to dtype d (identity for Float32).
func RoundTo(d DType, x float32) float32 {
	switch d {
	case BFloat16:
		return RoundBF16(x)
	case Float16:
		return RoundF16(x)
	}
	return x
}
