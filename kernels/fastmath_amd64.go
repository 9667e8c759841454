package kernels

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly loops; tests switch it off to check the
// scalar path too.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func geluAVX2(out, x []float32)

//go:noescape
func geluGradAccAVX2(dx, dy, x []float32)

//go:noescape
func expShiftAVX2(x []float32, shift float32)

// geluSlice writes out[i] = GELU(x[i]).
func geluSlice(out, x []float32) {
	done := 0
	if useAVX2 {
		geluAVX2(out, x)
		done = len(x) &^ 7
	}
	for i := done; i < len(x); i++ {
		out[i] = gelu32(x[i])
	}
}

// geluGradAccSlice does dx[i] += dy[i]·GELU'(x[i]).
func geluGradAccSlice(dx, dy, x []float32) {
	done := 0
	if useAVX2 {
		geluGradAccAVX2(dx, dy, x)
		done = len(x) &^ 7
	}
	for i := done; i < len(x); i++ {
		dx[i] += dy[i] * geluGrad32(x[i])
	}
}

// expShiftSlice does x[i] = exp(x[i] − shift). Results below e^-80 may be
// tiny instead of 0; callers that need exact zeros set them.
func expShiftSlice(x []float32, shift float32) {
	done := 0
	if useAVX2 {
		expShiftAVX2(x, shift)
		done = len(x) &^ 7
	}
	for i := done; i < len(x); i++ {
		x[i] = exp32(x[i] - shift)
	}
}
