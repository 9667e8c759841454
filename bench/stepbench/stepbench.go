// Package stepbench measures an FM-DiT training step (forward + MSE loss +
// backward + AdamW) on the configurations of shared/bench/configs.md; it is
// the logic behind `fmctl bench step`. The PyTorch peer that it is compared
// with lives in bench/peers/pytorch_fmdit_step.py and uses the same
// configurations, inputs' distributions, FLOP rule and report keys.
package stepbench

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/optim"
)

// Config is one benchmark configuration: the model and the batch.
type Config struct {
	Name       string
	Model      model.Config
	B, F, H, W int // latents [B, Cin, F, H, W]
	S          int // text tokens
}

// Tokens is N, the image/video tokens per sample.
func (c Config) Tokens() int {
	return (c.F / c.Model.PatchSizeT) * (c.H / c.Model.PatchSize) * (c.W / c.Model.PatchSize)
}

// Configs are shared/bench/configs.md's CPU configurations (bench-L is GPU only).
var Configs = map[string]Config{
	"bench-T": {Name: "bench-T", Model: model.Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 128, Depth: 4, NumHeads: 4, MLPRatio: 4, TextDim: 64}, B: 16, F: 1, H: 16, W: 16, S: 8},
	"bench-S": {Name: "bench-S", Model: model.Config{InChannels: 4, OutChannels: 4, PatchSize: 2, PatchSizeT: 1, HiddenSize: 384, Depth: 12, NumHeads: 6, MLPRatio: 4, TextDim: 512}, B: 8, F: 1, H: 32, W: 32, S: 32},
	"bench-V": {Name: "bench-V", Model: model.Config{InChannels: 16, OutChannels: 16, PatchSize: 2, PatchSizeT: 1, HiddenSize: 256, Depth: 6, NumHeads: 4, MLPRatio: 4, TextDim: 256}, B: 2, F: 5, H: 16, W: 16, S: 16},
	"bench-L": {Name: "bench-L", Model: model.Config{InChannels: 16, OutChannels: 16, PatchSize: 2, PatchSizeT: 1, HiddenSize: 1152, Depth: 28, NumHeads: 16, MLPRatio: 4, TextDim: 4096}, B: 32, F: 1, H: 64, W: 64, S: 128},
}

// Names lists the configurations, sorted.
func Names() []string {
	names := make([]string, 0, len(Configs))
	for n := range Configs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the configuration called name, or an error listing the known ones.
func Lookup(name string) (Config, error) {
	c, ok := Configs[name]
	if !ok {
		return Config{}, fmt.Errorf("stepbench: unknown config %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return c, nil
}

// Options controls a run.
type Options struct {
	Steps   int    // timed steps (at least 10 for a report; 0 means 10)
	Warmup  int    // untimed steps first (0 means 3; negative means none)
	Backend string // kernels backend name ("" means "cpu")
	Seed    uint64
}

// AdamW hyper-parameters of the benchmark step (configs.md; torch defaults otherwise).
const (
	LR          = 1e-4
	WeightDecay = 0.01
)

// Result is one run's report; the JSON keys config, median_step_ms, gflops
// and peak_rss_mb are shared with the PyTorch peer.
type Result struct {
	Config       string  `json:"config"`
	MedianStepMS float64 `json:"median_step_ms"`
	GFLOPS       float64 `json:"gflops"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	// DeviceMemMB is the GPU memory in use after the last step (the
	// device's total less its free memory), on GPU backends.
	DeviceMemMB float64   `json:"device_mem_mb,omitempty"`
	StepsMS     []float64 `json:"steps_ms"`
	Warmup      int       `json:"warmup"`
	StepGFLOP   float64   `json:"step_gflop"`
	Params      int       `json:"params"`
	Backend     string    `json:"backend"`
	GEMMKernel  string    `json:"gemm_kernel,omitempty"`
	Workers     int       `json:"workers,omitempty"`
	// CPUMSPerStep is the process's user+system CPU time per timed step:
	// on a shared machine it moves less than the wall time.
	CPUMSPerStep float64 `json:"cpu_ms_per_step"`
	FirstLoss    float64 `json:"first_loss"`
	LastLoss     float64 `json:"last_loss"`
}

// Run builds the model with DiT initialisation, synthesises one batch
// (Gaussian latents and text, uniform timesteps in [0,1000), Gaussian
// target, no padding) and times Warmup+Steps training steps.
func Run(ctx context.Context, c Config, opts Options) (Result, error) {
	if opts.Steps == 0 {
		opts.Steps = 10
	}
	if opts.Warmup == 0 {
		opts.Warmup = 3
	}
	opts.Warmup = max(opts.Warmup, 0)
	if opts.Backend == "" {
		opts.Backend = "cpu"
	}
	be, err := kernels.Open(opts.Backend)
	if err != nil {
		return Result{}, err
	}
	if cl, ok := be.(kernels.Closer); ok {
		defer cl.Close()
	}
	m, err := model.New(c.Model, be)
	if err != nil {
		return Result{}, err
	}
	m.InitDiT(opts.Seed)
	update := adamW(be, len(m.Params()))

	r := rand.New(rand.NewPCG(opts.Seed, 1))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	mc := c.Model
	in := model.Input{B: c.B, F: c.F, H: c.H, W: c.W, S: c.S,
		X: randn(c.B * mc.InChannels * c.F * c.H * c.W), Txt: randn(c.B * c.S * mc.TextDim), T: make([]float32, c.B)}
	for i := range in.T {
		in.T[i] = float32(1000 * r.Float64())
	}
	target := randn(c.B * mc.OutChannels * c.F * c.H * c.W)
	dOut := make([]float32, len(target))

	res := Result{Config: c.Name, Warmup: opts.Warmup, Params: len(m.Params()), Backend: be.Name(),
		StepGFLOP: model.StepFLOPs(mc, c.B, c.Tokens(), c.S) / 1e9}
	if cpu, ok := be.(*kernels.CPU); ok {
		res.GEMMKernel, res.Workers = cpu.GEMMKernel(), cpu.Workers()
	}
	var cpuStart float64
	for i := 0; i < opts.Warmup+opts.Steps; i++ {
		if i == opts.Warmup {
			if cpuStart, err = cpuSeconds(); err != nil {
				return Result{}, err
			}
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		start := time.Now()
		out, err := m.Forward(ctx, in)
		if err != nil {
			return Result{}, err
		}
		loss := be.MSEForward(out, target, len(out))
		clear(dOut)
		be.MSEBackward(dOut, out, target, len(out), 1)
		m.ZeroGrad()
		if err := m.Backward(ctx, dOut); err != nil {
			return Result{}, err
		}
		if err := update(m.Params(), m.Grads()); err != nil {
			return Result{}, err
		}
		elapsed := time.Since(start)
		if i == 0 {
			res.FirstLoss = loss
		}
		res.LastLoss = loss
		if i >= opts.Warmup {
			res.StepsMS = append(res.StepsMS, float64(elapsed.Microseconds())/1e3)
		}
	}
	cpuEnd, err := cpuSeconds()
	if err != nil {
		return Result{}, err
	}
	res.CPUMSPerStep = (cpuEnd - cpuStart) * 1e3 / float64(opts.Steps)
	res.MedianStepMS = median(res.StepsMS)
	res.GFLOPS = res.StepGFLOP / (res.MedianStepMS / 1e3)
	res.PeakRSSMB, err = PeakRSSMB()
	if err != nil {
		return Result{}, err
	}
	if d, ok := be.(deviceMemory); ok {
		used, err := d.DeviceMemoryInUse()
		if err != nil {
			return Result{}, err
		}
		res.DeviceMemMB = float64(used) / (1 << 20)
	}
	return res, nil
}

// deviceMemory is implemented by GPU backends (kernels/cuda).
type deviceMemory interface {
	DeviceMemoryInUse() (uint64, error)
}

// adamW returns the step's AdamW update (betas 0.9, 0.999, eps 1e-8, the
// torch defaults): on the device when the backend has one, else optim's.
func adamW(be kernels.Backend, n int) func(params, grads []float32) error {
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	if dev, ok := be.(kernels.AdamWStepper); ok {
		alloc := func() []float32 { return make([]float32, n) }
		if a, ok := be.(kernels.Allocator); ok {
			alloc = func() []float32 { return a.Alloc(n) }
		}
		mom, vel := alloc(), alloc()
		kernels.Zero(be, mom)
		kernels.Zero(be, vel)
		var step int64
		return func(params, grads []float32) error {
			step++
			return dev.AdamW(params, grads, mom, vel, LR, beta1, beta2, eps, WeightDecay, step)
		}
	}
	adam := optim.NewAdamW(n, beta1, beta2, eps, WeightDecay)
	return func(params, grads []float32) error { return adam.Update(params, grads, LR) }
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// cpuSeconds is the process's user+system CPU time so far.
func cpuSeconds() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("stepbench: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds(), nil
}

// PeakRSSMB is the process's peak resident set (VmHWM) in MiB, the figure
// Python's resource.getrusage(RUSAGE_SELF).ru_maxrss gives the peer.
func PeakRSSMB() (float64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("stepbench: peak RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("stepbench: parsing VmHWM %q: %w", rest, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("stepbench: no VmHWM in /proc/self/status")
}
