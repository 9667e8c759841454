//go:build !amd64

package kernels

// useAVX2 is always false off amd64.
var useAVX2 = false

// geluSlice writes out[i] = GELU(x[i]).
func geluSlice(out, x []float32) {
	for i, v := range x {
		out[i] = gelu32(v)
	}
}

// geluGradAccSlice does dx[i] += dy[i]·GELU'(x[i]).
func geluGradAccSlice(dx, dy, x []float32) {
	for i, v := range x {
		dx[i] += dy[i] * geluGrad32(v)
	}
}

// expShiftSlice does x[i] = exp(x[i] − shift).
func expShiftSlice(x []float32, shift float32) {
	for i, v := range x {
		x[i] = exp32(v - shift)
	}
}
