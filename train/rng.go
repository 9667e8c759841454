package train

import (
	"math/rand/v2"

	"github.com/fmtrain/fmtrain/flow"
)

// switchRNG is the pipeline's flow.RNG; reset points it at the stream of one
// micro-batch, derived from the job seed and the micro-batch's first global
// data position, so the draws depend on the data and not on who reads it.
type switchRNG struct{ g *flow.Generator }

var _ flow.RNG = (*switchRNG)(nil)

func (r *switchRNG) reset(seed uint64, position int64) { r.g = flow.NewRNG(seed, int(position)) }

func (r *switchRNG) Random() float64                      { return r.g.Random() }
func (r *switchRNG) Rand(n int) []float32                 { return r.g.Rand(n) }
func (r *switchRNG) Normal(m, s float64, n int) []float32 { return r.g.Normal(m, s, n) }
func (r *switchRNG) Randn(n int) []float32                { return r.g.Randn(n) }
func (r *switchRNG) Beta(a, b float64, n int) []float32   { return r.g.Beta(a, b, n) }

// dropText zeroes the text embeddings and mask of each sample whose draw
// (seeded by the job seed and the sample's global position) falls below p:
// the unconditional examples classifier-free guidance needs.
func dropText(batch flow.Batch, positions []int64, seed uint64, p float64) {
	if p <= 0 {
		return
	}
	txt, mask := batch.Tensor("text_embeddings"), batch.Tensor("text_mask")
	B := len(positions)
	for b, pos := range positions {
		if !Dropped(seed, pos, p) {
			continue
		}
		row := len(txt.Data) / B
		clear(txt.Data[b*row : (b+1)*row])
		if mask != nil {
			mrow := len(mask.Data) / B
			clear(mask.Data[b*mrow : (b+1)*mrow])
		}
	}
}

// Dropped reports whether the sample at a global position has its text
// dropped (probability p).
func Dropped(seed uint64, position int64, p float64) bool {
	r := rand.New(rand.NewPCG(seed^0x7e47d20b5e0f1a11, uint64(position)))
	return r.Float64() < p
}
