package collective

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpCluster joins n ranks over loopback TCP, all in this process.
func tcpCluster(t testing.TB, n int, opts Options) []Communicator {
	t.Helper()
	var eps []*Endpoint
	var addrs []string
	for range n {
		ep, err := Listen(context.Background(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
		addrs = append(addrs, ep.Addr())
	}
	comms := joinAll(t, eps, addrs, "tcp-job", 7, opts)
	t.Cleanup(func() {
		for _, c := range comms {
			_ = c.Close()
		}
		for _, ep := range eps {
			_ = ep.Close()
		}
	})
	return comms
}

// TestTCPAllReduceExact runs production-size chunks over TCP: messages of
// several 1 MiB chunks, past the exchange's send window many times over.
func TestTCPAllReduceExact(t *testing.T) {
	noLeaks(t)
	for _, n := range []int{2, 3, 4} {
		comms := tcpCluster(t, n, Options{})
		for _, length := range []int{1, n + 1, 3<<20/4 + 1, 6*sendWindow/4 + 7} {
			for _, op := range []Op{OpSum, OpAverage} {
				exactAllReduce(t, comms, length, op)
			}
		}
	}
}

// TestAllReduceDoesNotAllocate: steady-state calls allocate nothing on
// either rank (buffers are reused; plans live inside the ring).
func TestAllReduceDoesNotAllocate(t *testing.T) {
	comms := tcpCluster(t, 2, Options{})
	bufs := [][]float32{make([]float32, 1<<19), make([]float32, 1<<19)}
	const runs = 20
	var wg sync.WaitGroup
	wg.Go(func() {
		for range runs + 1 { // AllocsPerRun makes one warm-up call
			if err := comms[1].AllReduce(context.Background(), bufs[1], OpSum); err != nil {
				t.Error(err)
				return
			}
		}
	})
	allocs := testing.AllocsPerRun(runs, func() {
		if err := comms[0].AllReduce(context.Background(), bufs[0], OpSum); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if allocs != 0 {
		t.Errorf("%v allocations per all-reduce, want 0", allocs)
	}
}

// The killed-peer test runs rank 2 of 3 in a child process (this test
// binary, re-executed), kills it with SIGKILL in the middle of a stream of
// all-reduces, and checks that ranks 0 and 1 both fail with ErrPeerLost
// naming rank 2, long before their operation timeout.
const childEnv = "FMTRAIN_COLLECTIVE_TEST_CHILD"

func TestKilledPeerProcess(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runChildRank()
		return
	}
	noLeaks(t)
	for _, n := range []int{3, 4} { // the ring; recursive halving over pair links
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) { testKilledPeerProcess(t, n) })
	}
}

func testKilledPeerProcess(t *testing.T, n int) {
	const childRank = 2
	opts := Options{Timeout: 20 * time.Second, JoinTimeout: 10 * time.Second}

	child := exec.Command(os.Args[0], "-test.run=^TestKilledPeerProcess$")
	child.Env = append(os.Environ(), childEnv+"=1")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	lines := bufio.NewScanner(stdout)
	readLine := func() string {
		if !lines.Scan() {
			t.Fatalf("child exited early: %v", lines.Err())
		}
		return lines.Text()
	}
	childAddr := strings.TrimPrefix(readLine(), "addr ")

	// Survivor i is rank survivors[i]; the child is childRank.
	var survivors []int
	var eps []*Endpoint
	addrs := make([]string, n)
	for r := range n {
		if r == childRank {
			addrs[r] = childAddr
			continue
		}
		ep, err := Listen(context.Background(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		survivors = append(survivors, r)
		eps = append(eps, ep)
		addrs[r] = ep.Addr()
	}
	fmt.Fprintln(stdin, strings.Join(addrs, " "))

	comms := make([]Communicator, n-1)
	noErrors(t, each(n-1, func(i int) error {
		var err error
		rv := Rendezvous{JobID: "kill", Generation: 1, Rank: survivors[i], WorldSize: n, Addrs: addrs}
		comms[i], err = eps[i].Join(context.Background(), rv, opts)
		return err
	}))
	defer func() {
		for _, c := range comms {
			_ = c.Close()
		}
	}()

	var started sync.WaitGroup
	started.Add(n - 1)
	var killedAt time.Time
	done := make(chan []error)
	go func() {
		done <- each(n-1, func(r int) error { return reduceUntilError(comms[r], 1<<18, &started) })
	}()
	started.Wait()
	if got := readLine(); got != "running" {
		t.Fatalf("child said %q", got)
	}
	killedAt = time.Now()
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	errs := <-done
	if took := time.Since(killedAt); took > opts.Timeout/4 {
		t.Errorf("survivors took %v to fail (timeout %v)", took, opts.Timeout)
	}
	for i, err := range errs {
		var pl *PeerLostError
		if !errors.As(err, &pl) || pl.Peer != childRank {
			t.Errorf("rank %d: got %v, want ErrPeerLost naming rank %d", survivors[i], err, childRank)
		}
	}
}

// runChildRank is rank 2 in the child process: it prints its address,
// reads everyone's, joins, and all-reduces until killed.
func runChildRank() {
	ep, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Println("addr", ep.Addr())
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		os.Exit(2)
	}
	addrs := strings.Fields(in.Text())
	rank, _ := strconv.Atoi("2")
	comm, err := ep.Join(context.Background(), Rendezvous{JobID: "kill", Generation: 1, Rank: rank, WorldSize: len(addrs), Addrs: addrs},
		Options{Timeout: 20 * time.Second, JoinTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	buf := make([]float32, 1<<18)
	for i := 0; ; i++ {
		if err := comm.AllReduce(context.Background(), buf, OpSum); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		if i == 0 {
			fmt.Println("running")
		}
	}
}

// TestCloseAfterLastOperation: ranks close as soon as their last operation
// returns, while slower ranks are still finishing it; those must succeed.
func TestCloseAfterLastOperation(t *testing.T) {
	noLeaks(t)
	for i := range 6 {
		n := 3 + i%2 // the ring, and pair links
		comms := tcpCluster(t, n, Options{})
		noErrors(t, each(n, func(r int) error {
			buf := make([]float32, 1<<18)
			send := make([]float32, 1<<16)
			if err := comms[r].AllReduce(context.Background(), buf, OpSum); err != nil {
				return err
			}
			err := comms[r].AllGather(context.Background(), send, make([]float32, n*len(send)))
			_ = comms[r].Close()
			return err
		}))
	}
}
