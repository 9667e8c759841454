package collective

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// DefaultBucketBytes is PyTorch DDP's default bucket_cap_mb (25 MiB).
const DefaultBucketBytes = 25 << 20

// BucketOptions tune a BucketReducer. The zero value works.
type BucketOptions struct {
	// BucketBytes is the size at which the gradients handed over so far are
	// sent off as one all-reduce (default DefaultBucketBytes). Smaller
	// buckets start communication earlier; larger ones pay less per-call
	// latency.
	BucketBytes int
	// Op is the reduction (default OpAverage, DDP's gradient average).
	Op Op
}

// BucketReducer all-reduces a flat gradient buffer in buckets while backward
// is still running, like PyTorch DDP's reducer or Horovod's tensor fusion.
// Backward hands over each contiguous range of grads as soon as it is final
// (Ready, in any order, typically reverse layer order); neighbouring ranges
// are merged until they reach BucketBytes, then reduced on a background
// goroutine. Wait reduces what is left, waits for every bucket and readies
// the reducer for the next step.
//
// Every rank must hand over the same ranges in the same order (the same
// model does), so that their buckets, and thus their all-reduces, match.
// Ready and Wait are called by the training goroutine (Ready from inside
// backward); the communicator must not be used by anyone else meanwhile.
// After an error every later Wait returns it: close the reducer and the
// communicator and join a new generation.
type BucketReducer struct {
	comm        Communicator
	grads       []float32
	bucketElems int
	op          Op
	ctx         context.Context // cancelled by Close and by an abandoned Wait
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	workKick    chan struct{} // Ready/Wait → worker: a bucket was queued
	doneKick    chan struct{} // worker → Wait: a bucket finished

	// Owned by the training goroutine: the range handed over but not yet
	// queued, [pendLo, pendHi).
	pendLo, pendHi int
	readyErr       error

	mu       sync.Mutex // protects the fields below
	buckets  []bucketRange
	started  int // buckets taken by the worker
	finished int // buckets the worker is done with
	err      error
	closed   bool
}

type bucketRange struct{ lo, hi int }

// NewBucketReducer reduces grads (the model's flat gradient buffer) over
// comm. It starts one goroutine, stopped by Close.
func NewBucketReducer(comm Communicator, grads []float32, opts BucketOptions) (*BucketReducer, error) {
	if opts.BucketBytes == 0 {
		opts.BucketBytes = DefaultBucketBytes
	}
	if opts.Op == 0 {
		opts.Op = OpAverage
	}
	if opts.BucketBytes < 4 {
		return nil, fmt.Errorf("collective: bucket bytes (%d) must be at least 4", opts.BucketBytes)
	}
	if opts.Op != OpSum && opts.Op != OpAverage {
		return nil, fmt.Errorf("collective: bucket op %v is not sum or average", opts.Op)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &BucketReducer{
		comm: comm, grads: grads, bucketElems: opts.BucketBytes / 4, op: opts.Op,
		ctx: ctx, cancel: cancel,
		workKick: make(chan struct{}, 1),
		doneKick: make(chan struct{}, 1),
	}
	b.wg.Add(1)
	go b.work()
	return b, nil
}

// Ready hands over grads[lo:hi], whose values are final for this step. It
// never blocks; it has the signature of the model's grad-ready hook.
func (b *BucketReducer) Ready(lo, hi int) {
	if lo < 0 || hi > len(b.grads) || lo >= hi {
		if b.readyErr == nil {
			b.readyErr = fmt.Errorf("collective: bucket reducer: Ready(%d, %d) is not a non-empty range of the %d gradients", lo, hi, len(b.grads))
		}
		return
	}
	switch {
	case b.pendLo == b.pendHi:
		b.pendLo, b.pendHi = lo, hi
	case hi == b.pendLo:
		b.pendLo = lo
	case lo == b.pendHi:
		b.pendHi = hi
	default:
		b.queue(b.pendLo, b.pendHi)
		b.pendLo, b.pendHi = lo, hi
	}
	if b.pendHi-b.pendLo >= b.bucketElems {
		b.queue(b.pendLo, b.pendHi)
		b.pendLo, b.pendHi = 0, 0
	}
}

// queue hands [lo, hi) to the worker.
func (b *BucketReducer) queue(lo, hi int) {
	b.mu.Lock()
	b.buckets = append(b.buckets, bucketRange{lo, hi})
	b.mu.Unlock()
	select {
	case b.workKick <- struct{}{}:
	default:
	}
}

// Wait queues the last pending range and any part of grads that was never
// handed over this step (in ascending order, the same on every rank), waits
// for every bucket, and resets the reducer for the next step. On error the
// gradients hold undefined values and must not be applied.
func (b *BucketReducer) Wait(ctx context.Context) error {
	if b.pendLo != b.pendHi {
		b.queue(b.pendLo, b.pendHi)
		b.pendLo, b.pendHi = 0, 0
	}
	if err := b.queueGaps(); err != nil {
		return err
	}
	for {
		b.mu.Lock()
		done, total, err := b.finished, len(b.buckets), b.err
		if done == total {
			b.buckets, b.started, b.finished = b.buckets[:0], 0, 0
		}
		b.mu.Unlock()
		if done == total {
			if err == nil && b.readyErr != nil {
				err = b.readyErr
			}
			return err
		}
		select {
		case <-b.doneKick:
		case <-ctx.Done():
			// Abandon the step: cancelling aborts the running all-reduce
			// (and with it this generation's communicator).
			b.cancel()
			b.mu.Lock()
			if b.err == nil {
				b.err = fmt.Errorf("collective: waiting for gradient buckets: %w", context.Cause(ctx))
			}
			err := b.err
			b.mu.Unlock()
			return err
		}
	}
}

// queueGaps queues every part of grads no bucket covers, and fails if two
// buckets overlap (a range handed over twice would be reduced twice).
func (b *BucketReducer) queueGaps() error {
	b.mu.Lock()
	covered := make([]bucketRange, len(b.buckets))
	copy(covered, b.buckets)
	b.mu.Unlock()
	slices.SortFunc(covered, func(x, y bucketRange) int { return x.lo - y.lo })
	at := 0
	for _, c := range covered {
		if c.lo < at {
			return fmt.Errorf("collective: bucket reducer: gradients [%d, %d) were handed over twice this step", c.lo, min(at, c.hi))
		}
		b.queueSplit(at, c.lo)
		at = c.hi
	}
	b.queueSplit(at, len(b.grads))
	return nil
}

func (b *BucketReducer) queueSplit(lo, hi int) {
	for lo < hi {
		end := min(hi, lo+b.bucketElems)
		b.queue(lo, end)
		lo = end
	}
}

// work runs the queued all-reduces in order, one at a time.
func (b *BucketReducer) work() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		for b.started == len(b.buckets) && !b.closed {
			b.mu.Unlock()
			select {
			case <-b.workKick:
			case <-b.ctx.Done():
				return
			}
			b.mu.Lock()
		}
		if b.closed {
			b.mu.Unlock()
			return
		}
		index := b.started
		r := b.buckets[index]
		b.started++
		failed := b.err != nil
		b.mu.Unlock()

		var err error
		if !failed {
			err = b.comm.AllReduce(b.ctx, b.grads[r.lo:r.hi], b.op)
		}
		b.mu.Lock()
		if err != nil && b.err == nil {
			b.err = bucketError(err, index, r)
		}
		b.finished++
		b.mu.Unlock()
		select {
		case b.doneKick <- struct{}{}:
		default:
		}
	}
}

// bucketError names the bucket in a failure.
func bucketError(err error, index int, r bucketRange) error {
	var pl *PeerLostError
	if errors.As(err, &pl) {
		cp := *pl
		cp.Bucket = index
		return &cp
	}
	return fmt.Errorf("collective: all-reduce of bucket %d (gradients [%d, %d)): %w", index, r.lo, r.hi, err)
}

// Close stops the background goroutine, aborting a running all-reduce. It
// does not close the communicator.
func (b *BucketReducer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
