package data

import (
	"fmt"
	"math/rand/v2"
)

// Order maps global sample positions to dataset indices. Training reads the
// data as one endless stream: epoch e is a permutation of all n samples
// (shuffled from the job seed and e, or in order), and position p is
// sample perm_{p/n}[p%n]. Positions are what steps consume, so the order is
// independent of the world size. An Order caches one epoch's permutation and
// is used by one goroutine at a time.
type Order struct {
	n       int
	seed    uint64
	shuffle bool

	epoch int
	perm  []int
}

// NewOrder returns the order of n samples for a job seed.
func NewOrder(n int, seed uint64, shuffle bool) *Order {
	return &Order{n: n, seed: seed, shuffle: shuffle, epoch: -1}
}

// Index returns the epoch of position pos and the dataset index it reads.
func (o *Order) Index(pos int64) (epoch, index int) {
	epoch, k := int(pos/int64(o.n)), int(pos%int64(o.n))
	if !o.shuffle {
		return epoch, k
	}
	if epoch != o.epoch {
		o.perm = Permutation(o.n, o.seed, epoch)
		o.epoch = epoch
	}
	return epoch, o.perm[k]
}

// Permutation is epoch's shuffle of n samples: a Fisher–Yates shuffle driven
// by a PCG stream seeded with (seed, epoch), written out here so the order
// never changes with the Go version.
func Permutation(n int, seed uint64, epoch int) []int {
	r := rand.NewPCG(seed, 0x9e3779b97f4a7c15^uint64(epoch))
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(r.Uint64() % uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Plan divides each optimizer step's global batch among the ranks of one
// generation: a step starting at global position P reads [P, P+G);
// micro-batch a of rank r reads the L positions starting at P + (a·W + r)·L.
// Steps start at multiples of G (from wherever the run started), and every
// rank of every generation uses the same formula, so changing the world size
// between steps neither repeats nor skips a sample — and the chunks of L
// positions are the same for every world size.
type Plan struct {
	GlobalBatch, LocalBatch int
	World, Rank             int
}

// Accumulation is the micro-batches per rank per step: G / (L·W).
func (p Plan) Accumulation() int { return p.GlobalBatch / (p.LocalBatch * p.World) }

// Validate checks that the plan covers the global batch exactly.
func (p Plan) Validate() error {
	if p.LocalBatch <= 0 || p.World <= 0 || p.GlobalBatch <= 0 {
		return fmt.Errorf("data: plan needs positive batch sizes and world size (G %d, L %d, W %d)", p.GlobalBatch, p.LocalBatch, p.World)
	}
	if p.GlobalBatch%(p.LocalBatch*p.World) != 0 {
		return fmt.Errorf("data: global batch %d is not a multiple of local batch %d × world size %d", p.GlobalBatch, p.LocalBatch, p.World)
	}
	if p.Rank < 0 || p.Rank >= p.World {
		return fmt.Errorf("data: rank %d outside world size %d", p.Rank, p.World)
	}
	return nil
}

// Positions returns the global positions of micro-batch micro, for the
// plan's rank, of the step that starts at global position start.
func (p Plan) Positions(start int64, micro int) []int64 {
	base := start + int64((micro*p.World+p.Rank)*p.LocalBatch)
	out := make([]int64, p.LocalBatch)
	for j := range out {
		out[j] = base + int64(j)
	}
	return out
}

// StepsForEpochs is the number of full optimizer steps in numEpochs passes
// over n samples with global batch g (a last partial batch is dropped).
func StepsForEpochs(numEpochs, n, g int) int64 {
	return int64(numEpochs) * int64(n) / int64(g)
}
