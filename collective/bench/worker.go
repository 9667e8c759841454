package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/fmtrain/fmtrain/collective"
)

// Worker is one rank process: it listens on loopback, tells the parent its
// address, reads its Job, joins the ring and measures every size. Rank 0
// reports the results.
func Worker(ctx context.Context, in io.Reader, out io.Writer) error {
	ep, err := collective.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ep.Close()
	if _, err := fmt.Fprintf(out, "addr %s\n", ep.Addr()); err != nil {
		return err
	}
	line, err := nextLine(bufio.NewScanner(in))
	if err != nil {
		return fmt.Errorf("bench: reading job: %w", err)
	}
	var job Job
	if err := json.Unmarshal([]byte(line), &job); err != nil {
		return fmt.Errorf("bench: decoding job %q: %w", line, err)
	}
	cfg, err := job.Config.withDefaults()
	if err != nil {
		return err
	}
	if job.CPU >= 0 {
		if err := bindProcess(job.CPU); err != nil {
			return err
		}
	}
	rv := collective.Rendezvous{JobID: "bench-allreduce", Generation: 1, Rank: job.Rank, WorldSize: len(job.Addrs), Addrs: job.Addrs}
	comm, err := ep.Join(ctx, rv, collective.Options{ChunkBytes: cfg.ChunkBytes, Timeout: cfg.Timeout, SpinWait: cfg.SpinWait, Dedicated: true})
	if err != nil {
		return err
	}
	defer comm.Close()
	for _, size := range cfg.Sizes {
		res, err := Measure(ctx, comm, size, cfg.Warmup, cfg.Iters)
		if err != nil {
			return fmt.Errorf("bench: rank %d, %s: %w", job.Rank, FormatSize(size), err)
		}
		if job.Rank == 0 {
			b, _ := json.Marshal(res)
			if _, err := fmt.Fprintf(out, "result %s\n", b); err != nil {
				return err
			}
		}
	}
	if job.Rank == 0 {
		_, err = fmt.Fprintln(out, "done")
	}
	return err
}

// Measure times AllReduce(sum) of size bytes on every rank of comm (all
// ranks call it together). The buffer is allocated and filled before
// timing; the first reduction is checked against the exact sum (integer
// values); then warmup untimed and iters timed iterations follow, each
// after a barrier. An iteration's time is the slowest rank's.
func Measure(ctx context.Context, comm collective.Communicator, size int64, warmup, iters int) (Result, error) {
	n, rank := comm.Size(), comm.Rank()
	buf := make([]float32, size/4)
	for i := range buf {
		buf[i] = float32((rank + 1) * (i%7 + 1))
	}
	if err := comm.AllReduce(ctx, buf, collective.OpSum); err != nil {
		return Result{}, err
	}
	wrong := []float32{0}
	for i, v := range buf {
		if v != float32(n*(n+1)/2*(i%7+1)) {
			wrong[0] = 1
			break
		}
	}
	if err := comm.AllReduce(ctx, wrong, collective.OpSum); err != nil {
		return Result{}, err
	}
	for range warmup {
		if err := comm.AllReduce(ctx, buf, collective.OpSum); err != nil {
			return Result{}, err
		}
	}
	local := make([]float32, iters) // microseconds
	for i := range iters {
		if err := comm.Barrier(ctx); err != nil {
			return Result{}, err
		}
		start := time.Now()
		if err := comm.AllReduce(ctx, buf, collective.OpSum); err != nil {
			return Result{}, err
		}
		local[i] = float32(time.Since(start).Nanoseconds()) / 1e3
	}
	all := make([]float32, n*iters)
	if err := comm.AllGather(ctx, local, all); err != nil {
		return Result{}, err
	}
	times := make([]time.Duration, iters)
	for i := range iters {
		slowest := float32(0)
		for r := range n {
			slowest = max(slowest, all[r*iters+i])
		}
		times[i] = time.Duration(float64(slowest) * 1e3)
	}
	return newResult(n, size, times, wrong[0] == 0), nil
}
