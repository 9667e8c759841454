package kernels

import "testing"

// Per-op benchmarks on bench-S shapes (B=8, N=256, D=384, heads=6, M=1536),
// llm.c's benchmark_kernel: go test -run '^$' -bench . ./kernels/

func benchBuf(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%200)/50 - 2
	}
	return v
}

func BenchmarkGELUForward(b *testing.B) {
	x := benchBuf(8 * 256 * 1536)
	out := make([]float32, len(x))
	c := NewCPU(CPUOptions{})
	defer c.Close()
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		c.GELUForward(out, x, len(x))
	}
}

func BenchmarkLinearForwardFC1(b *testing.B) {
	const rows, in, out = 8 * 256, 384, 1536
	x, w, bias, y := benchBuf(rows*in), benchBuf(out*in), benchBuf(out), make([]float32, rows*out)
	c := NewCPU(CPUOptions{})
	defer c.Close()
	for b.Loop() {
		c.LinearForward(y, x, w, bias, rows, in, out)
	}
	b.ReportMetric(2*rows*in*out*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkAttentionSelf(b *testing.B) {
	const B, N, D, H = 8, 256, 384, 6
	d := AttentionDims{B: B, Heads: H, Nq: N, Nk: N, HeadDim: D / H, QRow: 3 * D, KRow: 3 * D, VRow: 3 * D, ORow: D, Scale: 0.125}
	qkv, dqkv := benchBuf(B*N*3*D), make([]float32, B*N*3*D)
	for i := range qkv {
		qkv[i] *= 0.1
	}
	out, dout, lse := make([]float32, B*N*D), benchBuf(B*N*D), make([]float32, B*H*N)
	c := NewCPU(CPUOptions{})
	defer c.Close()
	for b.Loop() {
		c.AttentionForward(out, lse, qkv, qkv[D:], qkv[2*D:], nil, d)
		c.AttentionBackward(dqkv, dqkv[D:], dqkv[2*D:], dout, qkv, qkv[D:], qkv[2*D:], nil, out, lse, d)
	}
	b.ReportMetric(6*2*B*N*N*D*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
