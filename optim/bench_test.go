package optim

import "testing"

func benchBuffers(n int) (p, g []float32) {
	p, g = make([]float32, n), make([]float32, n)
	for i := range p {
		p[i] = float32(i%97) / 97
		g[i] = float32(i%89)/89 - 0.5
	}
	return p, g
}

// BenchmarkAdamW updates 8M parameters (bench-S-sized models have ~30M).
func BenchmarkAdamW(b *testing.B) {
	p, g := benchBuffers(8 << 20)
	o := NewAdamW(len(p), 0.9, 0.999, 1e-8, 0.01)
	b.SetBytes(int64(len(p)) * 4 * 4) // p, g, m, v
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.Update(p, g, 1e-4)
	}
}

func BenchmarkClipGradNorm(b *testing.B) {
	_, g := benchBuffers(8 << 20)
	b.SetBytes(int64(len(g)) * 4)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ClipGradNorm(g, 1e9)
	}
}
