package collective

// planKind says which schedule a plan follows.
type planKind int

const (
	// planRing: at step s rank r sends segment r+shift−s and receives
	// segment r+shift−s−1, reducing during steps < n−1 and copying after.
	planRing planKind = 1 + iota
	// planBroadcast: chunks flow from root along the ring.
	planBroadcast
	// planExchange (two ranks): each sends its whole buffer to the other
	// and adds what it receives, chunk by chunk, once that region of its
	// own buffer has gone out. The same bytes as the ring (one buffer each
	// way) in one step instead of two, so nothing waits for a reduction
	// before it may be sent; a+b and b+a are the same bits, so both ranks
	// agree.
	planExchange
	// planPair: one step of recursive halving or doubling (halving.go):
	// send [sendLo, sendHi) to the partner, receive [recvLo, recvHi) from it
	// and add it (reduce) or copy it; the two ranges do not overlap.
	planPair
	// planSteps: the steps, run one after the other (halving.go).
	planSteps
)

// plan is one operation's schedule, cut into units: one chunk of one
// segment at one step (ring), or one chunk of the buffer (broadcast). Every
// rank computes the same segment and chunk boundaries, so the stream between
// two ranks needs no framing. A plan is a value inside the ring, refilled for
// each call, so steady-state calls allocate nothing.
type plan struct {
	kind planKind
	buf  []float32
	op   Op

	// planRing
	firstStep, lastStep int // steps [firstStep, lastStep)
	shift               int // segment rotation: 0 for all-reduce, n−1 for all-gather

	// planBroadcast
	root int

	// planExchange and planPair run on pair link link (halving.go), or on
	// the ring's two connections when link is 0. divides: their additions
	// are the operation's last, where OpAverage divides.
	link    int
	divides bool
	// planPair
	sendLo, sendHi, recvLo, recvHi int
	reduce                         bool
	// planSteps
	steps []plan

	rank, size int
	chunks     int // per segment (ring) or for the whole buffer (broadcast)
}

// layout fixes the chunking: every segment is cut into the same number of
// chunks of at most chunkBytes, so a unit's index says both its step and its
// chunk on every rank.
func (p *plan) layout(rank, size, chunkBytes int) {
	p.rank, p.size = rank, size
	perChunk := max(1, chunkBytes/4)
	span := len(p.buf)
	switch p.kind {
	case planRing:
		span = ceilDiv(len(p.buf), size)
	case planPair:
		span = max(p.sendHi-p.sendLo, p.recvHi-p.recvLo) // the partner's view swaps them
	}
	p.chunks = max(1, ceilDiv(span, perChunk))
	// A segment of a few chunk sizes or less would cross each step as one
	// or two units, leaving nothing to overlap; cut it finer, down to
	// pipelineMinBytes.
	if p.chunks < pipelineDepth {
		p.chunks = max(p.chunks, min(pipelineDepth, 4*span/pipelineMinBytes))
	}
}

// Pipelining of mid-sized messages: at least pipelineDepth chunks per
// segment, none smaller than pipelineMinBytes.
const (
	pipelineDepth    = 2
	pipelineMinBytes = 128 << 10
)

// segment returns segment j's bounds: the buffer split as evenly as integer
// division allows (lengths differ by at most one; some are empty when the
// buffer is shorter than the world).
func (p *plan) segment(j int) (lo, hi int) {
	n := len(p.buf)
	return j * n / p.size, (j + 1) * n / p.size
}

// chunk returns chunk c of [lo, hi).
func (p *plan) chunk(lo, hi, c int) (int, int) {
	n := hi - lo
	return lo + c*n/p.chunks, lo + (c+1)*n/p.chunks
}

// distance is how many hops downstream of root this rank is.
func (p *plan) distance() int { return mod(p.rank-p.root, p.size) }

func (p *plan) recvUnits() int {
	switch p.kind {
	case planExchange, planPair:
		return p.chunks
	case planSteps:
		return len(p.steps)
	}
	if p.kind == planBroadcast {
		if p.distance() == 0 {
			return 0
		}
		return p.chunks
	}
	return (p.lastStep - p.firstStep) * p.chunks
}

func (p *plan) sendUnits() int {
	switch p.kind {
	case planExchange, planPair:
		return p.chunks
	case planSteps:
		return len(p.steps) // every step sends, if only its header
	}
	if p.kind == planBroadcast {
		if p.distance() == p.size-1 {
			return 0 // next is root
		}
		return p.chunks
	}
	return (p.lastStep - p.firstStep) * p.chunks
}

// recvUnit returns receive unit u's bounds in buf, whether it is added to
// buf (else copied over it), and whether it is the last addition to its
// segment (where OpAverage divides).
func (p *plan) recvUnit(u int) (lo, hi int, reduce, last bool) {
	switch p.kind {
	case planExchange:
		lo, hi = p.chunk(0, len(p.buf), u)
		return lo, hi, true, p.divides
	case planPair:
		lo, hi = p.chunk(p.recvLo, p.recvHi, u)
		return lo, hi, p.reduce, p.divides
	}
	if p.kind == planBroadcast {
		lo, hi = p.chunk(0, len(p.buf), u)
		return lo, hi, false, false
	}
	s, c := p.firstStep+u/p.chunks, u%p.chunks
	slo, shi := p.segment(mod(p.rank+p.shift-s-1, p.size))
	lo, hi = p.chunk(slo, shi, c)
	return lo, hi, s < p.size-1, s == p.size-2
}

// sendUnit returns send unit u's bounds and how many receive units must be
// done before it may go (it forwards what they brought).
func (p *plan) sendUnit(u int) (lo, hi, needRecv int) {
	switch p.kind {
	case planExchange:
		lo, hi = p.chunk(0, len(p.buf), u)
		return lo, hi, 0
	case planPair:
		lo, hi = p.chunk(p.sendLo, p.sendHi, u)
		return lo, hi, 0
	}
	if p.kind == planBroadcast {
		lo, hi = p.chunk(0, len(p.buf), u)
		if p.distance() == 0 {
			return lo, hi, 0
		}
		return lo, hi, u + 1
	}
	s, c := p.firstStep+u/p.chunks, u%p.chunks
	slo, shi := p.segment(mod(p.rank+p.shift-s, p.size))
	lo, hi = p.chunk(slo, shi, c)
	if s == p.firstStep {
		return lo, hi, 0
	}
	return lo, hi, u - p.chunks + 1
}

// recvNeedsSent returns how many send units must be done before receive
// unit u may overwrite its region: a ring segment received at step s was
// sent by this rank at step s+1−n (during the all-gather half). An exchange
// may read at once; only adding into the buffer waits (addNeedsSent).
func (p *plan) recvNeedsSent(u int) int {
	if p.kind != planRing {
		return 0
	}
	return max(0, u-(p.size-1)*p.chunks+1)
}

// addNeedsSent returns how many send units must be done before a piece of
// receive unit u may be added into the buffer: in an exchange the region
// goes out from the same buffer, so unit u itself.
func (p *plan) addNeedsSent(u int) int {
	if p.kind == planExchange {
		return u + 1
	}
	return 0
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func mod(a, n int) int {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}
