package kernels

import "testing"

func BenchmarkGELUForward(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(i%200)/50 - 2
	}
	out := make([]float32, len(x))
	c := NewCPU(CPUOptions{Workers: 1})
	defer c.Close()
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		c.GELUForward(out, x, len(x))
	}
}
