package kernels

import (
	"sync"
	"sync/atomic"
)

// job is one parallel op: run processes items [lo, hi) on participant
// worker (0 is the calling goroutine). Jobs are preallocated structs held by
// the backend, passed as pointers, so launching one allocates nothing.
type job interface {
	run(worker, lo, hi int)
}

// pool runs a job's items over a fixed set of goroutines plus the caller.
// Items are handed out in chunks of grain through an atomic counter, so
// uneven items balance; which worker runs an item varies, so jobs that
// reduce must write per-item (or per-chunk) partial results and combine them
// in a fixed order to stay deterministic. One job at a time: a pool belongs
// to one backend, which one goroutine drives.
type pool struct {
	workers int             // participants, including the caller
	wake    []chan struct{} // wake[i] starts helper i (1..workers-1)
	done    sync.WaitGroup

	cur          job
	total, grain int
	next         atomic.Int64
	closeOnce    sync.Once
}

func newPool(workers int) *pool {
	if workers < 1 {
		workers = 1
	}
	p := &pool{workers: workers, wake: make([]chan struct{}, workers)}
	for i := 1; i < workers; i++ {
		p.wake[i] = make(chan struct{})
		go p.helper(i)
	}
	return p
}

func (p *pool) helper(i int) {
	for range p.wake[i] {
		p.loop(i)
		p.done.Done()
	}
}

func (p *pool) loop(worker int) {
	g := int64(p.grain)
	for {
		lo := p.next.Add(g) - g
		if lo >= int64(p.total) {
			return
		}
		p.cur.run(worker, int(lo), min(int(lo+g), p.total))
	}
}

// do runs j over items [0, total) in chunks of grain and returns when all
// are done.
func (p *pool) do(j job, total, grain int) {
	if total <= 0 {
		return
	}
	grain = max(grain, 1)
	chunks := (total + grain - 1) / grain
	if chunks == 1 || p.workers == 1 {
		j.run(0, 0, total)
		return
	}
	p.cur, p.total, p.grain = j, total, grain
	p.next.Store(0)
	helpers := min(p.workers-1, chunks-1)
	p.done.Add(helpers)
	for i := 1; i <= helpers; i++ {
		p.wake[i] <- struct{}{}
	}
	p.loop(0)
	p.done.Wait()
	p.cur = nil
}

// close stops the helper goroutines.
func (p *pool) close() {
	p.closeOnce.Do(func() {
		for i := 1; i < p.workers; i++ {
			close(p.wake[i])
		}
	})
}
