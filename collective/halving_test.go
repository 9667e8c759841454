package collective

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestPairLinks: worlds of 2^m ≥ 4 ranks form one pair link per distance
// over TCP; other worlds, and the in-memory transport, form none.
func TestPairLinks(t *testing.T) {
	noLeaks(t)
	for _, tc := range []struct {
		transport string
		n, links  int
	}{{"tcp", 2, 0}, {"tcp", 3, 0}, {"tcp", 4, 2}, {"tcp", 8, 3}, {"tcp", 6, 0}, {"inmem", 4, 0}} {
		c := newClusterOn(t, tc.transport, tc.n, testOptions())
		for r, comm := range c.comms {
			got := 0
			if p := comm.(*ring).poll; p != nil {
				got = len(p.pairs)
			}
			if got != tc.links {
				t.Errorf("%s n=%d rank %d: %d pair links, want %d", tc.transport, tc.n, r, got, tc.links)
			}
		}
		c.close()
	}
}

// pairLengths straddle the limits of recursive doubling and halving.
func pairLengths(n int) []int {
	d, h := doublingMaxBytes/4, halvingMaxBytes/4
	return []int{0, 1, n - 1, n + 1, 1001, d, d + 1, 3*d + 7, h, h + 1}
}

// TestPairAllReduceExact: recursive doubling, halving and the ring beyond
// them give exact sums and averages for every length around their limits.
func TestPairAllReduceExact(t *testing.T) {
	noLeaks(t)
	for _, n := range []int{4, 8} {
		opts := testOptions()
		opts.ChunkBytes = 0
		c := newClusterOn(t, "tcp", n, opts)
		for _, length := range pairLengths(n) {
			for _, op := range []Op{OpSum, OpAverage} {
				bufs := make([][]float32, n)
				noErrors(t, each(n, func(r int) error {
					bufs[r] = make([]float32, length)
					for i := range bufs[r] {
						bufs[r][i] = intInput(r, i)
					}
					return c.comms[r].AllReduce(context.Background(), bufs[r], op)
				}))
				for r := range n {
					for i, got := range bufs[r] {
						want := float32(n*(n+1)/2) * float32(i%13+1)
						if op == OpAverage {
							want /= float32(n)
						}
						if got != want {
							t.Fatalf("n=%d len=%d %v rank %d element %d: got %v, want %v", n, length, op, r, i, got, want)
						}
					}
				}
			}
		}
		c.close()
	}
}

// TestPairAllReduceBitIdentical: random floats summed by recursive doubling
// or halving leave every rank with the same bits, close to the exact sum.
func TestPairAllReduceBitIdentical(t *testing.T) {
	for _, n := range []int{4, 8} {
		c := newClusterOn(t, "tcp", n, testOptions())
		for _, length := range []int{doublingMaxBytes / 4, 3*doublingMaxBytes/4 + 7} {
			t.Run(fmt.Sprintf("n=%d/len=%d", n, length), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(n), uint64(length)))
				inputs := make([][]float32, n)
				bufs := make([][]float32, n)
				for r := range n {
					inputs[r] = make([]float32, length)
					for i := range inputs[r] {
						inputs[r][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(6)-3)))
					}
					bufs[r] = append([]float32(nil), inputs[r]...)
				}
				noErrors(t, each(n, func(r int) error {
					return c.comms[r].AllReduce(context.Background(), bufs[r], OpAverage)
				}))
				for i := range length {
					var exact, scale float64
					for r := range n {
						exact += float64(inputs[r][i])
						scale += math.Abs(float64(inputs[r][i]))
					}
					exact /= float64(n)
					if d := math.Abs(float64(bufs[0][i]) - exact); d > 1e-6*scale {
						t.Fatalf("element %d: got %v, float64 average %v", i, bufs[0][i], exact)
					}
					for r := 1; r < n; r++ {
						if math.Float32bits(bufs[r][i]) != math.Float32bits(bufs[0][i]) {
							t.Fatalf("element %d: rank %d has %v, rank 0 has %v", i, r, bufs[r][i], bufs[0][i])
						}
					}
				}
			})
		}
		c.close()
	}
}
