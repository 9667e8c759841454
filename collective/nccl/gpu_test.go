package nccl

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/collective"
	cu "github.com/fmtrain/fmtrain/cuda"
)

// gpuCount returns the CUDA devices here (0 without a driver or GPU).
func gpuCount() int {
	d, err := cu.LoadDriver()
	if err != nil {
		return 0
	}
	n, err := d.DeviceCount()
	if err != nil {
		return 0
	}
	return n
}

// TestNCCLTwoProcess runs two ranks as two processes of this test binary,
// one GPU each: they join a TCP ring, build the NCCL communicator over it
// and check every collective. scripts/gpu-check.sh runs it on hosts with
// two or more GPUs (FMTRAIN_REQUIRE_GPU=1 turns the skip into a failure).
func TestNCCLTwoProcess(t *testing.T) {
	if rank := os.Getenv("FMTRAIN_NCCL_CHILD_RANK"); rank != "" {
		r, _ := strconv.Atoi(rank)
		if err := ncclChild(r, strings.Split(os.Getenv("FMTRAIN_NCCL_ADDRS"), ",")); err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		return
	}
	if n := gpuCount(); n < 2 {
		if os.Getenv("FMTRAIN_REQUIRE_GPU") == "1" {
			t.Fatalf("%d GPU(s): the two-process NCCL check needs two", n)
		}
		t.Skipf("%d GPU(s) here; the two-process NCCL check needs two (scripts/gpu-check.sh runs it on GPU hosts)", n)
	}
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var cmds []*exec.Cmd
	outs := make([]*strings.Builder, 2)
	for r := range 2 {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestNCCLTwoProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "FMTRAIN_NCCL_CHILD_RANK="+strconv.Itoa(r), "FMTRAIN_NCCL_ADDRS="+strings.Join(addrs, ","))
		outs[r] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[r], outs[r]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for r, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("rank %d: %v\n%s", r, err, outs[r])
		} else {
			t.Logf("rank %d:\n%s", r, outs[r])
		}
	}
}

// ncclChild is one rank of TestNCCLTwoProcess.
func ncclChild(rank int, addrs []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ep, err := collective.Listen(ctx, addrs[rank])
	if err != nil {
		return err
	}
	defer ep.Close()
	ring, err := ep.Join(ctx, collective.Rendezvous{JobID: "gpu-check", Generation: 1, Rank: rank, WorldSize: len(addrs), Addrs: addrs}, collective.Options{})
	if err != nil {
		return err
	}
	defer ring.Close()
	c, err := New(ctx, ring, Options{Ordinal: rank})
	if err != nil {
		return err
	}
	defer c.Close()
	const n = 1 << 22
	buf := make([]float32, n)
	for i := range buf {
		buf[i] = float32(rank+1) * float32(i%1000)
	}
	start := time.Now()
	if err := c.AllReduce(ctx, buf, collective.OpSum); err != nil {
		return err
	}
	for i, v := range buf {
		if want := 3 * float32(i%1000); v != want {
			return fmt.Errorf("allreduce sum: element %d = %v, want %v", i, v, want)
		}
	}
	elapsed := time.Since(start)
	if err := c.AllReduce(ctx, buf, collective.OpAverage); err != nil {
		return err
	}
	if want := 1.5 * float32(999); buf[999] != want {
		return fmt.Errorf("allreduce avg: %v, want %v", buf[999], want)
	}
	b := []float32{float32(rank + 7)}
	if err := c.Broadcast(ctx, b, 1); err != nil || b[0] != 8 {
		return fmt.Errorf("broadcast: %v, %v", b, err)
	}
	recv := make([]float32, 4)
	if err := c.AllGather(ctx, []float32{float32(rank), float32(rank * 10)}, recv); err != nil || fmt.Sprint(recv) != "[0 0 1 10]" {
		return fmt.Errorf("allgather: %v, %v", recv, err)
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	fmt.Printf("rank %d: nccl %d, all-reduce of %d MiB (staged from host) in %v, every collective correct\n", rank, c.lib.Version, n*4>>20, elapsed)
	return nil
}
