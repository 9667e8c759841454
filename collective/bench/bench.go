// Package bench measures the collective ring the way nccl-tests measures
// NCCL: N local processes, one rank each, joined over loopback TCP; for each
// message size, warm-up iterations, then timed ones whose per-iteration time
// is the slowest rank's, reported as the median with algbw and busbw.
//
// The parent (Run) starts the rank processes with a caller-supplied command
// (fmctl re-executing itself), collects their addresses, hands every rank its
// Job, and reads rank 0's results. A rank process runs Worker.
//
// Parent ⇄ rank protocol, one line each on the rank's stdin/stdout:
//
//	rank → parent: "addr <host:port>"
//	parent → rank: Job as JSON
//	rank 0 → parent: "result <Result as JSON>" per size, then "done"
package bench

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Defaults for Config's zero fields.
const (
	DefaultIters  = 20
	DefaultWarmup = 5
	// MinIters is the fewest timed iterations a median is taken over.
	MinIters = 10
)

// DefaultSizes are nccl-tests-like message sizes in bytes.
var DefaultSizes = []int64{4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20}

// Config describes one benchmark run.
type Config struct {
	Ranks  int     // processes, ≥ 1
	Sizes  []int64 // message sizes in bytes, each a positive multiple of 4
	Iters  int     // timed iterations per size (default DefaultIters, ≥ MinIters)
	Warmup int     // untimed iterations per size before the timed ones (default DefaultWarmup)
	// ChunkBytes is the ring's pipelining chunk (0: the collective default).
	ChunkBytes int
	// Timeout bounds each operation (0: the collective default).
	Timeout time.Duration
	// SpinWait is how long a rank polls before sleeping (0: the collective
	// default; negative: never).
	SpinWait time.Duration
	// Bind pins rank r's process to the r-th CPU this process may use, when
	// there are at least as many CPUs as ranks: what mpirun does by default
	// (--bind-to core for up to two ranks). Unbound, the scheduler sometimes
	// puts two loopback ranks on one CPU for a while (wake-affine).
	Bind bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Iters == 0 {
		c.Iters = DefaultIters
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	}
	if len(c.Sizes) == 0 {
		c.Sizes = DefaultSizes
	}
	switch {
	case c.Ranks < 1:
		return c, fmt.Errorf("bench: ranks (%d) must be at least 1", c.Ranks)
	case c.Iters < MinIters:
		return c, fmt.Errorf("bench: iters (%d) must be at least %d for a meaningful median", c.Iters, MinIters)
	case c.Warmup < 0:
		return c, fmt.Errorf("bench: warmup (%d) cannot be negative", c.Warmup)
	}
	for _, s := range c.Sizes {
		if s <= 0 || s%4 != 0 {
			return c, fmt.Errorf("bench: size %d bytes is not a positive multiple of 4 (float32)", s)
		}
	}
	return c, nil
}

// Result is one size's measurement, in nccl-tests' terms.
type Result struct {
	Ranks  int     `json:"ranks"`
	Bytes  int64   `json:"bytes"`
	Iters  int     `json:"iters"`
	TimeUS float64 `json:"time_us"` // median over iterations of the slowest rank's time
	// AlgBWGBps is bytes / time; BusBWGBps = AlgBW·2(n−1)/n is what each
	// rank's link carried, comparable across world sizes.
	AlgBWGBps float64 `json:"algbw_gbps"`
	BusBWGBps float64 `json:"busbw_gbps"`
	MinUS     float64 `json:"min_us"`
	MaxUS     float64 `json:"max_us"`
	// Correct: every rank checked its first result against the exact sum.
	Correct bool `json:"correct"`
}

// newResult derives the bandwidths from per-iteration times.
func newResult(ranks int, bytes int64, times []time.Duration, correct bool) Result {
	us := make([]float64, len(times))
	for i, t := range times {
		us[i] = float64(t.Nanoseconds()) / 1e3
	}
	sort.Float64s(us)
	median := us[len(us)/2]
	if len(us)%2 == 0 {
		median = (us[len(us)/2-1] + us[len(us)/2]) / 2
	}
	alg := float64(bytes) / (median * 1e3) // bytes per ns = GB/s
	return Result{
		Ranks: ranks, Bytes: bytes, Iters: len(times), TimeUS: median,
		AlgBWGBps: alg, BusBWGBps: alg * BusFactor(ranks),
		MinUS: us[0], MaxUS: us[len(us)-1], Correct: correct,
	}
}

// BusFactor is 2(n−1)/n, the share of the buffer each rank of a ring
// all-reduce sends (0 for one rank).
func BusFactor(ranks int) float64 {
	return 2 * float64(ranks-1) / float64(ranks)
}

// WriteTable prints results like nccl-tests' all_reduce_perf.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ranks\tsize\tbytes\ttime(us)\talgbw(GB/s)\tbusbw(GB/s)\tmin(us)\tmax(us)\tcheck\t")
	for _, r := range results {
		check := "ok"
		if !r.Correct {
			check = "WRONG"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%.3f\t%.3f\t%.1f\t%.1f\t%s\t\n",
			r.Ranks, FormatSize(r.Bytes), r.Bytes, r.TimeUS, r.AlgBWGBps, r.BusBWGBps, r.MinUS, r.MaxUS, check)
	}
	return tw.Flush()
}

var units = []struct {
	suffix string
	scale  int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}

// ParseSizes parses a comma-separated list like "4KiB,64KiB,1MiB,256MiB"
// (suffixes B, K/KiB, M/MiB, G/GiB, powers of two; a bare number is bytes).
func ParseSizes(list string) ([]int64, error) {
	var sizes []int64
	for _, field := range strings.Split(list, ",") {
		s := strings.TrimSpace(field)
		if s == "" {
			continue
		}
		scale := int64(1)
		num := s
		for _, u := range units {
			if strings.HasSuffix(s, u.suffix) {
				scale, num = u.scale, strings.TrimSuffix(s, u.suffix)
				break
			}
		}
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bench: size %q is not a positive number of bytes with an optional B, KiB, MiB or GiB suffix", s)
		}
		sizes = append(sizes, v*scale)
	}
	if len(sizes) == 0 {
		return nil, fmt.Errorf("bench: no sizes in %q", list)
	}
	return sizes, nil
}

// FormatSize prints bytes with the largest binary unit that divides them.
func FormatSize(b int64) string {
	for _, u := range units[:3] {
		if b >= u.scale && b%u.scale == 0 {
			return fmt.Sprintf("%d%s", b/u.scale, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", b)
}
