package collective

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// reduceUntilError runs all-reduces on rank r until one fails, and reports
// the error and how long after the first failure elapsed.
func reduceUntilError(comm Communicator, length int, started *sync.WaitGroup) error {
	buf := make([]float32, length)
	first := true
	for {
		err := comm.AllReduce(context.Background(), buf, OpSum)
		if first {
			started.Done()
			first = false
		}
		if err != nil {
			return err
		}
	}
}

// TestDisconnectMidReduce cuts one rank off while every rank is inside a
// stream of all-reduces: each survivor must fail with ErrPeerLost naming
// that rank, well before the operation timeout.
func TestDisconnectMidReduce(t *testing.T) {
	noLeaks(t)
	for _, n := range []int{2, 3, 4, 7} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			opts := testOptions()
			opts.Timeout = 10 * time.Second
			c := newCluster(t, n, opts)
			victim := n / 2
			var started sync.WaitGroup
			started.Add(n)
			begin := time.Now()
			var errs []error
			done := make(chan struct{})
			go func() {
				errs = each(n, func(r int) error { return reduceUntilError(c.comms[r], 40000, &started) })
				close(done)
			}()
			started.Wait()
			cut := time.Now()
			c.net.Disconnect(c.addrs[victim])
			<-done
			if took := time.Since(cut); took > opts.Timeout/2 {
				t.Errorf("ranks took %v to fail (timeout %v): the failure did not propagate", took, opts.Timeout)
			}
			_ = begin
			for r, err := range errs {
				if r == victim {
					continue
				}
				var pl *PeerLostError
				if !errors.Is(err, ErrPeerLost) || !errors.As(err, &pl) {
					t.Fatalf("rank %d: got %v, want ErrPeerLost", r, err)
				}
				if pl.Peer != victim || pl.Op != "allreduce" || pl.Bucket != -1 {
					t.Errorf("rank %d: error names peer %d op %q bucket %d, want peer %d op allreduce bucket -1: %v", r, pl.Peer, pl.Op, pl.Bucket, victim, err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("rank %d", victim)) {
					t.Errorf("rank %d: error text does not name rank %d: %v", r, victim, err)
				}
				// The communicator is unusable from now on, with the same story.
				again := c.comms[r].AllReduce(context.Background(), make([]float32, 10), OpSum)
				if !errors.Is(again, ErrPeerLost) {
					t.Errorf("rank %d: call after failure: got %v, want ErrPeerLost", r, again)
				}
			}
		})
	}
}

// TestSilentPeerTimesOut: one rank never enters the operation. Everyone
// else must return ErrPeerLost by the operation timeout.
func TestSilentPeerTimesOut(t *testing.T) {
	noLeaks(t)
	for _, tr := range transports {
		for _, length := range []int{5, 5000, 300000} { // small path, one chunk, pipelined
			t.Run(fmt.Sprintf("%s/len=%d", tr, length), func(t *testing.T) { testSilentPeer(t, tr, length) })
		}
	}
}

func testSilentPeer(t *testing.T, transport string, length int) {
	opts := testOptions()
	opts.Timeout = 300 * time.Millisecond
	const n = 4
	c := newClusterOn(t, transport, n, opts)
	const silent = 2
	start := time.Now()
	errs := each(n, func(r int) error {
		if r == silent {
			return nil
		}
		return c.comms[r].AllReduce(context.Background(), make([]float32, length), OpSum)
	})
	took := time.Since(start)
	for r, err := range errs {
		if r != silent && !errors.Is(err, ErrPeerLost) {
			t.Errorf("rank %d: got %v, want ErrPeerLost", r, err)
		}
	}
	if took > opts.Timeout+2*time.Second {
		t.Errorf("took %v with a %v timeout", took, opts.Timeout)
	}
	// The silent rank hears about it too, even outside an operation.
	err := c.comms[silent].Barrier(context.Background())
	if !errors.Is(err, ErrPeerLost) {
		t.Errorf("silent rank's next call: got %v, want ErrPeerLost", err)
	}
}

// TestDivergedCallsFail: ranks that make different calls (another
// operation or another length) fail with an error
// naming both calls, on both transports, instead of reading each other's
// bytes as their own.
func TestDivergedCallsFail(t *testing.T) {
	noLeaks(t)
	for _, tr := range transports {
		for _, n := range []int{2, 3, 4} {
			for name, call := range map[string]func(c Communicator, r int) error{
				"length": func(c Communicator, r int) error {
					return c.AllReduce(context.Background(), make([]float32, 100+r), OpSum)
				},
				"operation": func(c Communicator, r int) error {
					if r == 0 {
						return c.Barrier(context.Background())
					}
					return c.AllReduce(context.Background(), make([]float32, 1), OpSum)
				},
			} {
				t.Run(fmt.Sprintf("%s/n=%d/%s", tr, n, name), func(t *testing.T) {
					c := newClusterOn(t, tr, n, testOptions())
					errs := each(n, func(r int) error { return call(c.comms[r], r) })
					diverged := 0
					for r, err := range errs {
						if !errors.Is(err, ErrPeerLost) {
							t.Errorf("rank %d: got %v, want ErrPeerLost", r, err)
						}
						if err != nil && strings.Contains(err.Error(), "calls diverged") {
							diverged++
						}
					}
					if diverged == 0 {
						t.Errorf("no rank says the calls diverged: %v", errs)
					}
				})
			}
		}
	}
}

// TestContextCancelAbortsEveryRank: one rank's context is cancelled while
// the others wait for it; all of them return promptly.
func TestContextCancelAbortsEveryRank(t *testing.T) {
	noLeaks(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testContextCancel(t, tr) })
	}
}

func testContextCancel(t *testing.T, transport string) {
	const n = 3
	c := newClusterOn(t, transport, n, testOptions())
	ctx, cancel := context.WithCancel(context.Background())
	errs := each(n, func(r int) error {
		if r == 1 {
			time.AfterFunc(50*time.Millisecond, cancel)
			<-ctx.Done()
			return c.comms[r].AllReduce(ctx, make([]float32, 100), OpSum)
		}
		return c.comms[r].AllReduce(context.Background(), make([]float32, 100), OpSum)
	})
	if !errors.Is(errs[1], context.Canceled) {
		t.Errorf("cancelled rank: got %v, want context.Canceled", errs[1])
	}
	for _, r := range []int{0, 2} {
		var pl *PeerLostError
		if !errors.As(errs[r], &pl) || pl.Peer != 1 {
			t.Errorf("rank %d: got %v, want ErrPeerLost naming rank 1", r, errs[r])
		}
	}
}

func TestCloseIsIdempotentAndFailsLaterCalls(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testCloseIsIdempotent(t, tr) })
	}
}

func testCloseIsIdempotent(t *testing.T, transport string) {
	c := newClusterOn(t, transport, 2, testOptions())
	if err := c.comms[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.comms[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.comms[0].Barrier(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	var pl *PeerLostError
	checkFor(t, 2*time.Second, func() error {
		err := c.comms[1].Barrier(context.Background())
		if !errors.As(err, &pl) || pl.Peer != 0 {
			return fmt.Errorf("peer of a closed rank: got %v, want ErrPeerLost naming rank 0", err)
		}
		return nil
	})
}

// TestJoinRefusesOtherGenerationAndJob: a rank dialing with a stale
// generation or another job is refused with a reason naming both. Ranks 0
// and 2 are right; rank 1 dials rank 2 while rank 2's Join runs.
func TestJoinRefusesOtherGenerationAndJob(t *testing.T) {
	noLeaks(t)
	for name, tc := range map[string]struct {
		job  string
		gen  uint64
		want string
	}{
		"stale generation": {"job", 1, "generation 1"},
		"other job":        {"other", 2, `job "other"`},
	} {
		t.Run(name, func(t *testing.T) {
			netw := NewNetwork()
			var eps []*Endpoint
			var addrs []string
			for i := range 3 {
				layer, _ := netw.Listen(fmt.Sprintf("r%d", i))
				eps = append(eps, NewEndpoint(layer, nil))
				addrs = append(addrs, layer.Addr().String())
			}
			defer func() {
				for _, ep := range eps {
					_ = ep.Close()
				}
			}()
			opts := testOptions()
			opts.JoinTimeout = 500 * time.Millisecond
			errs := each(3, func(r int) error {
				rv := Rendezvous{JobID: "job", Generation: 2, Rank: r, WorldSize: 3, Addrs: addrs}
				if r == 1 {
					rv.JobID, rv.Generation = tc.job, tc.gen
					time.Sleep(50 * time.Millisecond) // rank 2's Join is already running
				}
				comm, err := eps[r].Join(context.Background(), rv, opts)
				if comm != nil {
					_ = comm.Close()
				}
				return err
			})
			if errs[1] == nil || !strings.Contains(errs[1].Error(), "refused") || !strings.Contains(errs[1].Error(), tc.want) {
				t.Errorf("misconfigured rank: got %v, want a refusal naming %s", errs[1], tc.want)
			}
			if errs[0] == nil || errs[2] == nil {
				t.Errorf("ranks joined a ring with a refused peer: %v", errs)
			}
		})
	}
}

// TestEndpointServesSuccessiveGenerations: the same endpoints form
// generation 2 after generation 1 failed, including a peer whose Join for
// generation 2 starts before ours.
func TestEndpointServesSuccessiveGenerations(t *testing.T) {
	noLeaks(t)
	c := newCluster(t, 3, testOptions())
	_ = c.comms[1].Close() // generation 1 is over
	for _, comm := range c.comms {
		_ = comm.Close()
	}
	comms := make([]Communicator, 3)
	errs := each(3, func(r int) error {
		if r == 0 {
			time.Sleep(100 * time.Millisecond) // rank 2 dials us before we join
		}
		var err error
		rv := Rendezvous{JobID: "job", Generation: 2, Rank: r, WorldSize: 3, Addrs: c.addrs}
		comms[r], err = c.eps[r].Join(context.Background(), rv, testOptions())
		return err
	})
	noErrors(t, errs)
	c.comms = comms
	bufs := [][]float32{{1}, {2}, {3}}
	noErrors(t, each(3, func(r int) error { return comms[r].AllReduce(context.Background(), bufs[r], OpSum) }))
	for r := range 3 {
		if bufs[r][0] != 6 {
			t.Errorf("rank %d: got %v, want 6", r, bufs[r][0])
		}
	}
}
