package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseAndFormatSizes(t *testing.T) {
	got, err := ParseSizes("4KiB, 64K,1MiB,256MiB,1GiB,12,3B")
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{4 << 10, 64 << 10, 1 << 20, 256 << 20, 1 << 30, 12, 3}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ParseSizes: got %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "4XB", "-1KiB", "0", "KiB"} {
		if _, err := ParseSizes(bad); err == nil {
			t.Errorf("ParseSizes(%q): no error", bad)
		}
	}
	for b, s := range map[int64]string{4096: "4KiB", 1 << 20: "1MiB", 3 << 30: "3GiB", 1000: "1000B", 1536: "1536B"} {
		if got := FormatSize(b); got != s {
			t.Errorf("FormatSize(%d) = %q, want %q", b, got, s)
		}
	}
}

func TestResultBandwidths(t *testing.T) {
	times := make([]time.Duration, 11)
	for i := range times {
		times[i] = time.Duration(100+i) * time.Microsecond // median 105 µs
	}
	r := newResult(4, 1<<20, times, true)
	if r.TimeUS != 105 || r.MinUS != 100 || r.MaxUS != 110 || r.Iters != 11 {
		t.Fatalf("times: %+v", r)
	}
	alg := float64(1<<20) / 105e-6 / 1e9
	if math.Abs(r.AlgBWGBps-alg) > 1e-9 || math.Abs(r.BusBWGBps-alg*1.5) > 1e-9 {
		t.Fatalf("algbw %v busbw %v, want %v and %v", r.AlgBWGBps, r.BusBWGBps, alg, alg*1.5)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, []Result{r}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1MiB") || !strings.Contains(out.String(), "105.0") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	for _, cfg := range []Config{
		{Ranks: 0},
		{Ranks: 2, Iters: 5},
		{Ranks: 2, Warmup: -1},
		{Ranks: 2, Sizes: []int64{6}},
	} {
		if _, err := cfg.withDefaults(); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

const rankEnv = "FMTRAIN_BENCH_TEST_RANK"

// TestRunProcesses runs the whole benchmark with this test binary
// re-executed as the rank processes, as fmctl does with itself.
func TestRunProcesses(t *testing.T) {
	if os.Getenv(rankEnv) != "" {
		if err := Worker(context.Background(), os.Stdin, os.Stdout); err != nil {
			t.Fatal(err)
		}
		return
	}
	launch := func(ctx context.Context, rank int) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRunProcesses$")
		cmd.Env = append(os.Environ(), rankEnv+"=1")
		return cmd
	}
	for _, cfg := range []Config{
		{Ranks: 3, Sizes: []int64{4 << 10, 40 << 10, 1<<20 + 12}, Iters: 10, Warmup: 1},
		{Ranks: 2, Sizes: []int64{4 << 10, 1 << 20}, Iters: 10, Warmup: 1, Bind: true}, // bound where 2 CPUs are free
	} {
		var stderr bytes.Buffer
		results, err := Run(context.Background(), cfg, launch, &stderr)
		if err != nil {
			t.Fatalf("%+v: %v\n%s", cfg, err, stderr.String())
		}
		if len(results) != len(cfg.Sizes) {
			t.Fatalf("%d results for %d sizes", len(results), len(cfg.Sizes))
		}
		for i, r := range results {
			if r.Ranks != cfg.Ranks || r.Bytes != cfg.Sizes[i] || !r.Correct || r.TimeUS <= 0 || r.Iters != 10 {
				t.Errorf("result %d: %+v", i, r)
			}
		}
	}
}
