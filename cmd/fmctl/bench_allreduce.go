package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fmtrain/fmtrain/collective/bench"
)

// newBenchAllReduceCmd is "fmctl bench allreduce": N local rank processes
// (this binary, re-executed as "bench allreduce-rank") over loopback TCP.
func newBenchAllReduceCmd() *cobra.Command {
	var (
		ranks, iters, warmup, chunkKiB int
		sizes, format                  string
		timeout, spin                  time.Duration
		bind                           bool
	)
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Measure the TCP ring all-reduce on N local processes (nccl-tests style)",
		Long: `Starts --ranks processes on this machine, joins them into a collective ring
over loopback TCP, and for each size prints the median time of --iters
all-reduces (sum, float32) after --warmup untimed ones, each iteration timed
as its slowest rank, with algbw = bytes/time and busbw = algbw·2(n−1)/n.
The first reduction of every size is checked against the exact sum. With
at least as many CPUs as ranks, each rank process is pinned to its own CPU
(--bind, on by default, as mpirun binds its ranks to cores).`,
		Example: "  fmctl bench allreduce --ranks 4 --sizes 4KiB,64KiB,1MiB,16MiB,64MiB,256MiB\n  fmctl bench allreduce --ranks 2 --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := bench.ParseSizes(sizes)
			if err != nil {
				return err
			}
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding fmctl's own binary to start the ranks: %w", err)
			}
			cfg := bench.Config{Ranks: ranks, Sizes: list, Iters: iters, Warmup: warmup, ChunkBytes: chunkKiB << 10, Timeout: timeout, SpinWait: spin, Bind: bind}
			launch := func(ctx context.Context, rank int) *exec.Cmd {
				return exec.CommandContext(ctx, self, "bench", "allreduce-rank")
			}
			results, err := bench.Run(cmd.Context(), cfg, launch, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else if err := bench.WriteTable(out, results); err != nil {
				return err
			}
			for _, r := range results {
				if !r.Correct {
					return fmt.Errorf("all-reduce of %s returned a wrong sum", bench.FormatSize(r.Bytes))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&ranks, "ranks", 2, "number of local rank processes")
	f.StringVar(&sizes, "sizes", sizeList(bench.DefaultSizes), "comma-separated message sizes (B, KiB, MiB, GiB)")
	f.IntVar(&iters, "iters", bench.DefaultIters, fmt.Sprintf("timed iterations per size (≥ %d)", bench.MinIters))
	f.IntVar(&warmup, "warmup", bench.DefaultWarmup, "untimed iterations per size")
	f.IntVar(&chunkKiB, "chunk-kib", 0, "ring pipelining chunk in KiB (0: the collective default)")
	f.DurationVar(&timeout, "timeout", 0, "per-operation timeout (0: the collective default)")
	f.DurationVar(&spin, "spin", 0, "how long a rank polls its socket before sleeping (0: the collective default, negative: never)")
	f.BoolVar(&bind, "bind", true, "pin each rank process to its own CPU when there are enough (as mpirun --bind-to core)")
	f.StringVar(&format, "format", "table", "output format: table or json")
	return cmd
}

// newBenchAllReduceRankCmd is one rank of "fmctl bench allreduce"; it
// speaks the bench package's line protocol on stdin/stdout.
func newBenchAllReduceRankCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "allreduce-rank",
		Short:  "One rank process of fmctl bench allreduce (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.Worker(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

func sizeList(sizes []int64) string {
	parts := make([]string, len(sizes))
	for i, s := range sizes {
		parts[i] = bench.FormatSize(s)
	}
	return strings.Join(parts, ",")
}
