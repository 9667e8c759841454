package collective

import (
	"fmt"
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
				exactAllReduce(t, c.comms, length, op)
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
				randomAllReduce(t, c.comms, length, OpAverage, rand.NewPCG(uint64(n), uint64(length)))
			})
		}
		c.close()
	}
}
