package collective

import "math/bits"

// Recursive doubling and halving (Thakur, Rabenseifner & Gropp, "Optimization
// of Collective Communication Operations in MPICH", 2005). In a world of
// 2^m ranks, each rank r also holds one connection per distance d = 2^k to
// rank r XOR d, its pair link k+1 (Join). Then an all-reduce takes log2(n)
// or 2·log2(n) steps instead of the ring's 2(n−1): on a machine whose
// ranks outnumber its cores every step is a round of scheduling, which is
// most of a mid-sized message's time (4 ranks on 2 cores, 64 KiB: MPI's
// ring takes 297 µs, its recursive halving 184 µs).
//
//   - Recursive doubling (small messages): at each distance the two ranks
//     exchange their whole buffers and add what arrives (planExchange on the
//     pair link). a+b and b+a are the same bits and both ranks of a pair
//     hold the same sums afterwards, so every rank ends with the same bits.
//   - Recursive halving, then doubling (mid-sized messages): at distance d
//     (from n/2 down to 1) the two ranks split the range they share, each
//     sends the half it gives up and adds the half it keeps; every rank ends
//     owning the complete sum of one block, computed there alone. The blocks
//     then travel back the same way (distance 1 up to n/2), copied. Each
//     rank sends 2(n−1)/n of the buffer, like the ring.
//
// The ring stays for large messages (it overlaps its steps, and windows its
// sends through one link) and for world sizes that are not powers of two.

// maxPairWorld bounds the worlds that form pair links: log2(64) = 6 more
// connections per rank.
const maxPairWorld = 64

// maxPairSteps is the most steps a halving-doubling all-reduce takes.
const maxPairSteps = 2 * 6

// Message-size limits (bytes) of the two algorithms. Measured with fmctl
// bench allreduce at 4 ranks on 2 cores, median µs of two interleaved runs
// each (ring / recursive doubling / recursive halving): 4 KiB 103–113 /
// 85–89 / 75–141, 64 KiB 161–235 / 105–137 / 99–161, 256 KiB 397–419 /
// 262–394 / 206–221, 1 MiB 1150–1169 / 1168–1566 / 686–972, 4 MiB
// 4332–5573 / 6728–6893 / 4681–4991, 16 MiB 18877–21655 / 24812–25322 /
// 24023–28938.
const (
	doublingMaxBytes = 16 << 10
	halvingMaxBytes  = 2 << 20
)

// pairDistances lists the distances that have pair links in a world of n:
// 1, 2, 4, …, n/2 when n is a power of two from 4 to maxPairWorld, else none.
func pairDistances(n int) []int {
	if n < 4 || n > maxPairWorld || n&(n-1) != 0 {
		return nil
	}
	var ds []int
	for d := 1; d < n; d *= 2 {
		ds = append(ds, d)
	}
	return ds
}

// pairPlan fills r.plan with an all-reduce of buf over the pair links,
// recursive doubling or halving by size, and reports whether it did: the
// ring needs pair links (and the progress engine that drives them).
func (r *ring) pairPlan(buf []float32, op Op) bool {
	bytes := 4 * len(buf)
	if r.poll == nil || len(r.poll.pairs) == 0 || bytes > halvingMaxBytes {
		return false
	}
	m := bits.Len(uint(r.size)) - 1
	steps := r.steps[:0]
	if bytes <= doublingMaxBytes {
		for k := range m {
			st := plan{kind: planExchange, buf: buf, op: op, link: k + 1, divides: k == m-1}
			st.layout(r.rank, r.size, r.opts.ChunkBytes)
			steps = append(steps, st)
		}
	} else {
		var parents [maxPairSteps / 2][2]int
		lo, hi := 0, len(buf)
		for k := m - 1; k >= 0; k-- { // halving: distance n/2 down to 1
			parents[k] = [2]int{lo, hi}
			mid := lo + (hi-lo)/2
			keepLo, keepHi, giveLo, giveHi := lo, mid, mid, hi
			if r.rank&(1<<k) != 0 {
				keepLo, keepHi, giveLo, giveHi = mid, hi, lo, mid
			}
			steps = append(steps, r.pairStep(buf, op, k, giveLo, giveHi, keepLo, keepHi, true, k == 0))
			lo, hi = keepLo, keepHi
		}
		for k := range m { // doubling: distance 1 up to n/2
			plo, phi := parents[k][0], parents[k][1]
			otherLo, otherHi := plo, lo // the partner holds the rest of the parent range
			if lo == plo {
				otherLo, otherHi = hi, phi
			}
			steps = append(steps, r.pairStep(buf, op, k, lo, hi, otherLo, otherHi, false, false))
			lo, hi = plo, phi
		}
	}
	r.plan = plan{kind: planSteps, buf: buf, op: op, steps: steps}
	return true
}

// pairStep is one step with the partner at distance 2^k: send
// [sendLo, sendHi), receive [recvLo, recvHi) and add it (reduce) or copy it.
func (r *ring) pairStep(buf []float32, op Op, k, sendLo, sendHi, recvLo, recvHi int, reduce, divides bool) plan {
	st := plan{kind: planPair, buf: buf, op: op, link: k + 1,
		sendLo: sendLo, sendHi: sendHi, recvLo: recvLo, recvHi: recvHi, reduce: reduce, divides: divides}
	st.layout(r.rank, r.size, r.opts.ChunkBytes)
	return st
}

// pairPeer is the rank at the other end of pair link link (≥ 1).
func (r *ring) pairPeer(link int) int { return r.rank ^ (1 << (link - 1)) }
