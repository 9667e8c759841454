package collective

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly loop (reduce_amd64.s).
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func addAVX2(dst, src *float32, n int)

// addVector adds the largest multiple of 32 elements with AVX2 and returns
// how many it did.
func addVector(dst, src []float32) int {
	n := len(dst) &^ 31
	if !useAVX2 || n == 0 {
		return 0
	}
	addAVX2(&dst[0], &src[0], n)
	return n
}
