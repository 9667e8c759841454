package nccl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/collective"
	cu "github.com/fmtrain/fmtrain/cuda"
)

func TestIDFloatsRoundTrip(t *testing.T) {
	var id cu.UniqueID
	for i := range id.Internal {
		id.Internal[i] = byte(255 - i*7)
	}
	got, err := idFromFloats(idFloats(id))
	if err != nil || got != id {
		t.Fatalf("round trip: %v", err)
	}
	f := idFloats(id)
	f[3] = 256
	if _, err := idFromFloats(f); err == nil || !strings.Contains(err.Error(), "byte 3") {
		t.Errorf("bad byte: %v", err)
	}
	f[3] = 1.5
	if _, err := idFromFloats(f); err == nil {
		t.Error("fractional byte accepted")
	}
	if _, err := idFromFloats(f[:10]); err == nil {
		t.Error("short id accepted")
	}
}

// TestExchangeIDOverRing: rank 0's id reaches every rank through the real
// TCP-ring communicator (over in-memory pipes), and only rank 0 makes one.
func TestExchangeIDOverRing(t *testing.T) {
	const n = 3
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	network := collective.NewNetwork()
	var eps []*collective.Endpoint
	var addrs []string
	for i := range n {
		layer, err := network.Listen(fmt.Sprintf("rank%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ep := collective.NewEndpoint(layer, nil)
		defer ep.Close()
		eps = append(eps, ep)
		addrs = append(addrs, ep.Addr())
	}
	var want cu.UniqueID
	for i := range want.Internal {
		want.Internal[i] = byte(i*31 + 7)
	}
	var made sync.Map
	ids := make([]cu.UniqueID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			comm, err := eps[r].Join(ctx, collective.Rendezvous{JobID: "job", Generation: 1, Rank: r, WorldSize: n, Addrs: addrs}, collective.Options{})
			if err != nil {
				errs[r] = err
				return
			}
			defer comm.Close()
			ids[r], errs[r] = exchangeID(ctx, comm, func() (cu.UniqueID, error) {
				made.Store(r, true)
				return want, nil
			})
		}()
	}
	wg.Wait()
	for r := range n {
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
		if ids[r] != want {
			t.Errorf("rank %d got another id", r)
		}
		if _, ok := made.Load(r); ok != (r == 0) {
			t.Errorf("rank %d made an id: %v", r, ok)
		}
	}
}

// TestNewWithoutNCCL: on a host without libnccl.so.2 (CI) New fails with a
// clear error before touching the bootstrap communicator.
func TestNewWithoutNCCL(t *testing.T) {
	if _, err := cu.LoadNCCL(); err == nil {
		t.Skip("NCCL is installed here; scripts/gpu-check.sh exercises it with two processes")
	}
	_, err := New(context.Background(), nil, Options{})
	if !errors.Is(err, cu.ErrLibraryNotFound) || !strings.Contains(err.Error(), "libnccl.so.2") {
		t.Errorf("got %v, want ErrLibraryNotFound naming libnccl.so.2", err)
	}
}
