package collective

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// testOptions keeps failure tests short.
func testOptions() Options {
	return Options{Timeout: 5 * time.Second, JoinTimeout: 5 * time.Second, ChunkBytes: MinChunkBytes}
}

// cluster is n ranks joined over an in-memory Network or loopback TCP.
type cluster struct {
	net   *Network // nil over TCP
	eps   []*Endpoint
	comms []Communicator
	addrs []string
}

// transports are the two data paths: in-memory pipes run the ring's
// goroutine path, TCP its progress engine (poll_linux.go) where there is one.
var transports = []string{"inmem", "tcp"}

// newCluster joins n ranks of job "job" generation 1 over in-memory pipes.
func newCluster(t *testing.T, n int, opts Options) *cluster {
	t.Helper()
	return newClusterOn(t, "inmem", n, opts)
}

// newClusterOn joins n ranks over transport ("inmem" or "tcp").
func newClusterOn(t *testing.T, transport string, n int, opts Options) *cluster {
	t.Helper()
	c := &cluster{}
	if transport == "inmem" {
		c.net = NewNetwork()
	}
	for i := range n {
		var layer StreamLayer
		var err error
		if c.net != nil {
			layer, err = c.net.Listen(fmt.Sprintf("rank%d", i))
		} else {
			layer, err = ListenTCP(context.Background(), "127.0.0.1:0")
		}
		if err != nil {
			t.Fatal(err)
		}
		c.eps = append(c.eps, NewEndpoint(layer, nil))
		c.addrs = append(c.addrs, layer.Addr().String())
	}
	c.comms = joinAll(t, c.eps, c.addrs, "job", 1, opts)
	t.Cleanup(c.close)
	return c
}

// joinAll joins every endpoint concurrently and fails the test on error.
func joinAll(t testing.TB, eps []*Endpoint, addrs []string, job string, gen uint64, opts Options) []Communicator {
	t.Helper()
	comms := make([]Communicator, len(eps))
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			rv := Rendezvous{JobID: job, Generation: gen, Rank: i, WorldSize: len(eps), Addrs: addrs}
			comms[i], errs[i] = ep.Join(context.Background(), rv, opts)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d join: %v", i, err)
		}
	}
	return comms
}

func (c *cluster) close() {
	for _, comm := range c.comms {
		if comm != nil {
			_ = comm.Close()
		}
	}
	for _, ep := range c.eps {
		_ = ep.Close()
	}
}

// each runs f on every rank concurrently and returns the ranks' errors.
func each(n int, f func(rank int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() { errs[r] = f(r) })
	}
	wg.Wait()
	return errs
}

func noErrors(t testing.TB, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// checkFor polls cond until it returns nil or total elapses.
func checkFor(t *testing.T, total time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noLeaks fails the test if goroutines started during it are still around
// when it ends (after the test's own cleanups).
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		checkFor(t, 5*time.Second, func() error {
			if now := runtime.NumGoroutine(); now > before {
				buf := make([]byte, 1<<16)
				return fmt.Errorf("goroutines: %d before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
			}
			return nil
		})
	})
}
