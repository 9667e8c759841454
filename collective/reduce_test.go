package collective

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestAddAndAddDivMatchPlainLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 64, 1000, 1029} {
		dst, src := make([]float32, n), make([]float32, n)
		for i := range dst {
			dst[i], src[i] = rng.Float32()*100-50, rng.Float32()*100-50
		}
		gotAdd, gotAvg := append([]float32(nil), dst...), append([]float32(nil), dst...)
		add(gotAdd, src)
		addDiv(gotAvg, src, 3)
		for i := range dst {
			if want := dst[i] + src[i]; gotAdd[i] != want {
				t.Fatalf("n=%d add[%d] = %v, want %v", n, i, gotAdd[i], want)
			}
			if want := (dst[i] + src[i]) / 3; gotAvg[i] != want {
				t.Fatalf("n=%d addDiv[%d] = %v, want %v", n, i, gotAvg[i], want)
			}
		}
	}
}

func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{16 << 10, 4 << 20} { // in L2; streaming from memory
		for _, vector := range []bool{false, true} {
			b.Run(fmt.Sprintf("floats=%d/vector=%v", n, vector), func(b *testing.B) {
				defer setVector(vector)()
				dst, src := make([]float32, n), make([]float32, n)
				b.SetBytes(int64(8 * n))
				for b.Loop() {
					add(dst, src)
				}
			})
		}
	}
}
