package collective

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// layerSizes is a toy model's parameter table: contiguous ranges of one
// flat buffer, of uneven sizes.
var layerSizes = []int{300, 1, 2500, 77, 1024, 4096, 9, 640}

type layer struct{ lo, hi int }

func layers() (ls []layer, total int) {
	for _, n := range layerSizes {
		ls = append(ls, layer{total, total + n})
		total += n
	}
	return ls, total
}

// backward writes each layer's gradient (integer values, so any summation
// order is exact) and hands it over, last layer first, as a model's
// backward does; skip leaves one layer unreported.
func backward(grads []float32, ls []layer, rank, step, skip int, ready func(lo, hi int)) {
	for l := len(ls) - 1; l >= 0; l-- {
		for i := ls[l].lo; i < ls[l].hi; i++ {
			grads[i] = float32((rank + 1) * (i%11 + step + 1))
		}
		if l != skip {
			ready(ls[l].lo, ls[l].hi)
		}
	}
}

func TestBucketReducer(t *testing.T) {
	noLeaks(t)
	ls, total := layers()
	for _, tc := range []struct {
		n, bucketBytes, skip int
		op                   Op
	}{
		{1, 4096, -1, OpAverage},
		{2, 4096, -1, OpSum},
		{3, 4096, 3, OpAverage},               // one layer never reported: Wait reduces it
		{4, 1 << 20, -1, OpSum},               // everything in one bucket
		{3, 4, -1, OpSum},                     // one bucket per layer
		{7, DefaultBucketBytes, 0, OpAverage}, // default size, first layer late
	} {
		t.Run(fmt.Sprintf("n=%d/bucket=%d/skip=%d/%v", tc.n, tc.bucketBytes, tc.skip, tc.op), func(t *testing.T) {
			c := newCluster(t, tc.n, testOptions())
			grads := make([][]float32, tc.n)
			reducers := make([]*BucketReducer, tc.n)
			for r := range tc.n {
				grads[r] = make([]float32, total)
				var err error
				reducers[r], err = NewBucketReducer(c.comms[r], grads[r], BucketOptions{BucketBytes: tc.bucketBytes, Op: tc.op})
				if err != nil {
					t.Fatal(err)
				}
				defer reducers[r].Close()
			}
			for step := range 3 {
				noErrors(t, each(tc.n, func(r int) error {
					backward(grads[r], ls, r, step, tc.skip, reducers[r].Ready)
					return reducers[r].Wait(context.Background())
				}))
				for r := range tc.n {
					for i, got := range grads[r] {
						want := float32(tc.n*(tc.n+1)/2) * float32(i%11+step+1)
						if tc.op == OpAverage {
							want /= float32(tc.n)
						}
						if got != want {
							t.Fatalf("step %d rank %d gradient %d: got %v, want %v", step, r, i, got, want)
						}
					}
				}
			}
		})
	}
}

func TestBucketReducerRejectsBadRanges(t *testing.T) {
	c := newCluster(t, 1, testOptions())
	grads := make([]float32, 100)
	br, err := NewBucketReducer(c.comms[0], grads, BucketOptions{BucketBytes: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	br.Ready(50, 100)
	br.Ready(40, 60)
	if err := br.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("overlapping ranges: got %v, want an error saying they were handed over twice", err)
	}

	br2, _ := NewBucketReducer(c.comms[0], grads, BucketOptions{})
	defer br2.Close()
	br2.Ready(90, 101)
	if err := br2.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "Ready(90, 101)") {
		t.Errorf("out-of-range Ready: got %v, want an error naming it", err)
	}
	if _, err := NewBucketReducer(c.comms[0], grads, BucketOptions{Op: Op(9)}); err == nil {
		t.Error("NewBucketReducer with Op(9): no error")
	}
}

// TestBucketReducerPeerLost: a rank disappears during a step's buckets;
// every other rank's Wait fails with ErrPeerLost naming it and a bucket.
func TestBucketReducerPeerLost(t *testing.T) {
	noLeaks(t)
	const n, victim = 3, 1
	c := newCluster(t, n, testOptions())
	ls, total := layers()
	errs := each(n, func(r int) error {
		grads := make([]float32, total)
		br, err := NewBucketReducer(c.comms[r], grads, BucketOptions{BucketBytes: 4096})
		if err != nil {
			return err
		}
		defer br.Close()
		for step := 0; ; step++ {
			if r == victim && step == 2 {
				c.net.Disconnect(c.addrs[victim])
				return nil
			}
			backward(grads, ls, r, step, -1, br.Ready)
			if err := br.Wait(context.Background()); err != nil {
				return err
			}
		}
	})
	for r, err := range errs {
		if r == victim {
			continue
		}
		var pl *PeerLostError
		if !errors.As(err, &pl) || pl.Peer != victim || pl.Bucket < 0 || pl.Op != "allreduce" {
			t.Errorf("rank %d: got %v, want ErrPeerLost naming rank %d, an all-reduce and a bucket", r, err, victim)
		}
	}
}

// countingComm counts the all-reduces that have finished.
type countingComm struct {
	Communicator
	done atomic.Int64
}

func (c *countingComm) AllReduce(ctx context.Context, buf []float32, op Op) error {
	err := c.Communicator.AllReduce(ctx, buf, op)
	c.done.Add(1)
	return err
}

// TestBucketsReduceDuringBackward: the first bucket's all-reduce finishes
// while backward is still running (before the remaining layers are handed
// over and before Wait).
func TestBucketsReduceDuringBackward(t *testing.T) {
	const n = 2
	c := newCluster(t, n, testOptions())
	ls, total := layers()
	last := ls[len(ls)-1]
	noErrors(t, each(n, func(r int) error {
		comm := &countingComm{Communicator: c.comms[r]}
		grads := make([]float32, total)
		br, err := NewBucketReducer(comm, grads, BucketOptions{BucketBytes: 4 * (last.hi - last.lo)})
		if err != nil {
			return err
		}
		defer br.Close()
		br.Ready(last.lo, last.hi) // a full bucket: goes off at once
		deadline := time.Now().Add(5 * time.Second)
		for comm.done.Load() == 0 { // "backward" carries on meanwhile
			if time.Now().After(deadline) {
				return errors.New("the first bucket was not reduced before Wait")
			}
			time.Sleep(time.Millisecond)
		}
		for l := len(ls) - 2; l >= 0; l-- {
			br.Ready(ls[l].lo, ls[l].hi)
		}
		return br.Wait(context.Background())
	}))
}
