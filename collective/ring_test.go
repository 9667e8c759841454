package collective

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var worldSizes = []int{1, 2, 3, 4, 7}

// lengths returns the interesting buffer lengths for a world of n: empty,
// one, around n, and large enough to span several chunks per segment.
func lengths(n int) []int {
	// Five chunks per segment, not divisible, and past the small-message path.
	large := max(5*MinChunkBytes/4*n+3, smallAllReduceBytes/4/max(n-1, 1)+7)
	return []int{0, 1, max(n-1, 0), n + 1, 1000, large}
}

// integer-valued inputs make every summation order exact.
func intInput(rank, i int) float32 { return float32((rank + 1) * (i%13 + 1)) }

// exactAllReduce all-reduces intInput's values, length of them, on every
// rank of comms and fails unless every rank holds the exact sum (or average).
func exactAllReduce(t testing.TB, comms []Communicator, length int, op Op) {
	t.Helper()
	n := len(comms)
	bufs := make([][]float32, n)
	noErrors(t, each(n, func(r int) error {
		bufs[r] = make([]float32, length)
		for i := range bufs[r] {
			bufs[r][i] = intInput(r, i)
		}
		return comms[r].AllReduce(context.Background(), bufs[r], op)
	}))
	for r := range n {
		for i, got := range bufs[r] {
			want := float32(n*(n+1)/2) * float32(i%13+1)
			if op == OpAverage {
				want /= float32(n)
			}
			if got != want {
				t.Fatalf("n=%d len=%d %v rank %d element %d: got %v, want %v", n, length, op, r, i, got, want)
			}
		}
	}
}

func TestAllReduceExactSum(t *testing.T) {
	noLeaks(t)
	for _, tr := range transports {
		for _, n := range worldSizes {
			testAllReduceExactSum(t, tr, n)
		}
	}
}

func testAllReduceExactSum(t *testing.T, transport string, n int) {
	c := newClusterOn(t, transport, n, testOptions())
	defer c.close()
	for _, length := range lengths(n) {
		for _, op := range []Op{OpSum, OpAverage} {
			t.Run(fmt.Sprintf("%s/n=%d/len=%d/%v", transport, n, length, op), func(t *testing.T) {
				exactAllReduce(t, c.comms, length, op)
			})
		}
	}
}

func TestSendWindowHoldsAPiece(t *testing.T) {
	// An exchange adds a piece only once its region has gone out, so the
	// window must let more than a whole piece go out ahead of the additions
	// (TestTCPAllReduceExact deadlocks otherwise).
	if sendWindow <= 4*recvPiece {
		t.Fatalf("sendWindow %d B does not exceed a receive piece (%d B)", sendWindow, 4*recvPiece)
	}
}

func TestAllReduceBitIdenticalAcrossRanks(t *testing.T) {
	for _, tr := range transports {
		for _, n := range worldSizes {
			t.Run(fmt.Sprintf("%s/n=%d", tr, n), func(t *testing.T) { testBitIdentical(t, tr, n) })
		}
	}
}

func testBitIdentical(t *testing.T, transport string, n int) {
	c := newClusterOn(t, transport, n, testOptions())
	randomAllReduce(t, c.comms, 3*MinChunkBytes/4*n+5, OpSum, rand.NewPCG(1, uint64(n)))
}

// randomAllReduce all-reduces random floats of many magnitudes, length of
// them, on every rank of comms and fails unless every rank holds the same
// bits, within 1e-6 (relative to the magnitudes) of the float64 result.
func randomAllReduce(t testing.TB, comms []Communicator, length int, op Op, src rand.Source) {
	t.Helper()
	n := len(comms)
	rng := rand.New(src)
	inputs := make([][]float32, n)
	bufs := make([][]float32, n)
	for r := range n {
		inputs[r] = make([]float32, length)
		for i := range inputs[r] {
			inputs[r][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(6)-3)))
		}
		bufs[r] = append([]float32(nil), inputs[r]...)
	}
	noErrors(t, each(n, func(r int) error {
		return comms[r].AllReduce(context.Background(), bufs[r], op)
	}))
	for i := range length {
		var exact, scale float64
		for r := range n {
			exact += float64(inputs[r][i])
			scale += math.Abs(float64(inputs[r][i]))
		}
		if op == OpAverage {
			exact, scale = exact/float64(n), scale/float64(n)
		}
		if d := math.Abs(float64(bufs[0][i]) - exact); d > 1e-6*scale {
			t.Fatalf("element %d: got %v, float64 result %v (diff %g)", i, bufs[0][i], exact, d)
		}
		for r := 1; r < n; r++ {
			if math.Float32bits(bufs[r][i]) != math.Float32bits(bufs[0][i]) {
				t.Fatalf("element %d: rank %d has %v, rank 0 has %v", i, r, bufs[r][i], bufs[0][i])
			}
		}
	}
}

func TestBroadcastAllGatherBarrier(t *testing.T) {
	noLeaks(t)
	for _, tr := range transports {
		for _, n := range worldSizes {
			testBroadcastAllGatherBarrier(t, tr, n)
		}
	}
}

func testBroadcastAllGatherBarrier(t *testing.T, transport string, n int) {
	c := newClusterOn(t, transport, n, testOptions())
	defer c.close()
	for _, length := range lengths(n) {
		t.Run(fmt.Sprintf("%s/n=%d/len=%d", transport, n, length), func(t *testing.T) {
			root := n / 2
			got := make([][]float32, n)
			noErrors(t, each(n, func(r int) error {
				got[r] = make([]float32, length)
				for i := range got[r] {
					got[r][i] = intInput(r, i)
				}
				return c.comms[r].Broadcast(context.Background(), got[r], root)
			}))
			for r := range n {
				for i, v := range got[r] {
					if v != intInput(root, i) {
						t.Fatalf("broadcast: rank %d element %d: got %v, want root's %v", r, i, v, intInput(root, i))
					}
				}
			}

			gathered := make([][]float32, n)
			noErrors(t, each(n, func(r int) error {
				send := make([]float32, length)
				for i := range send {
					send[i] = intInput(r, i)
				}
				gathered[r] = make([]float32, n*length)
				return c.comms[r].AllGather(context.Background(), send, gathered[r])
			}))
			for r := range n {
				for src := range n {
					for i := range length {
						if v := gathered[r][src*length+i]; v != intInput(src, i) {
							t.Fatalf("allgather: rank %d block %d element %d: got %v, want %v", r, src, i, v, intInput(src, i))
						}
					}
				}
			}
			noErrors(t, each(n, func(r int) error { return c.comms[r].Barrier(context.Background()) }))
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	c := newCluster(t, 2, testOptions())
	ctx := context.Background()
	if err := c.comms[0].AllReduce(ctx, []float32{1}, Op(7)); err == nil {
		t.Error("AllReduce with Op(7): no error")
	}
	if err := c.comms[0].Broadcast(ctx, []float32{1}, 2); err == nil {
		t.Error("Broadcast from root 2 of 2: no error")
	}
	if err := c.comms[0].AllGather(ctx, make([]float32, 3), make([]float32, 5)); err == nil {
		t.Error("AllGather into a recv of the wrong length: no error")
	}
	// The argument errors above must not have broken the ring.
	bufs := [][]float32{{1, 2}, {3, 4}}
	noErrors(t, each(2, func(r int) error { return c.comms[r].AllReduce(ctx, bufs[r], OpSum) }))
	if bufs[0][0] != 4 || bufs[1][1] != 6 {
		t.Fatalf("after argument errors: got %v", bufs)
	}
}

func TestRendezvousValidate(t *testing.T) {
	good := Rendezvous{JobID: "j", Generation: 1, Rank: 1, WorldSize: 2, Addrs: []string{"a", "b"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Rendezvous){
		"job id":     func(rv *Rendezvous) { rv.JobID = "" },
		"world size": func(rv *Rendezvous) { rv.WorldSize = 0 },
		"rank":       func(rv *Rendezvous) { rv.Rank = 2 },
		"addrs":      func(rv *Rendezvous) { rv.Addrs = rv.Addrs[:1] },
		"addr of":    func(rv *Rendezvous) { rv.Addrs = []string{"a", ""} },
	} {
		rv := good
		rv.Addrs = append([]string(nil), good.Addrs...)
		mutate(&rv)
		err := rv.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming %q", name, err, name)
		}
	}
}

// TestAllReduceWorld64 covers the largest world the issue names, with
// lengths below, at and above the world size, on both the small-message and
// the ring path.
func TestAllReduceWorld64(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testAllReduceWorld64(t, tr) })
	}
}

func testAllReduceWorld64(t *testing.T, transport string) {
	const n = 64
	c := newClusterOn(t, transport, n, testOptions())
	for _, length := range []int{1, n - 1, n + 1, 300, 5000} {
		exactAllReduce(t, c.comms, length, OpAverage)
	}
}

// TestSpinWait: by default ranks poll only where the CPU is otherwise idle
// (the host's ranks times their compute threads fit in its CPUs) or where
// the process only communicates. Explicit values win.
func TestSpinWait(t *testing.T) {
	addrs := func(n int) []string {
		a := []string{"10.0.0.9:7000"} // another host
		for i := 1; i < n; i++ {
			a = append(a, fmt.Sprintf("127.0.0.1:%d", 7000+i))
		}
		return a
	}
	const cpus = 8
	for _, tc := range []struct {
		set       time.Duration
		dedicated bool
		local     int // ranks on rank 1's host
		procs     int // GOMAXPROCS
		want      time.Duration
	}{
		{0, false, 1, 8, DefaultSpinWait},
		{0, false, 2, 4, DefaultSpinWait},
		{0, false, 2, 8, 0},
		{0, true, 2, 8, DefaultSpinWait},
		{0, true, 8, 8, DefaultSpinWait},
		{0, true, 9, 8, DefaultSpinWait},
		{time.Millisecond, false, 9, 8, time.Millisecond},
		{-1, true, 1, 1, 0},
	} {
		rv := Rendezvous{JobID: "j", Generation: 1, Rank: 1, WorldSize: tc.local + 1, Addrs: addrs(tc.local + 1)}
		o := Options{SpinWait: tc.set, Dedicated: tc.dedicated}
		if got := spinWait(o, rv, cpus, tc.procs); got != tc.want {
			t.Errorf("%+v: got %v, want %v", tc, got, tc.want)
		}
	}
}
