package devices

import (
	"errors"
	"fmt"
	"sync"
)

// Host is the set of GPUs this process can use, discovered once at Open.
// It is safe for concurrent use; Close must be called once when done.
type Host struct {
	mu     sync.Mutex // guards closed and serialises sampler calls
	closed bool
	// sampler reads a GPU's counters; nil when NVML is not available.
	sampler sampler

	gpus        []GPU  // visible GPUs in CUDA ordinal order; immutable after Open
	noGPUReason string // one clause saying why gpus is empty
}

// sampler is the NVML side of a Host (nvml.go; absent without cgo).
type sampler interface {
	stats(d Device) (Stats, error)
	shutdown() error
}

// Open discovers the GPUs through the system's NVML. A host without the
// NVIDIA driver (or a binary built without cgo, which NVML needs) yields a
// Host with no GPUs (see NoGPUReason), not an error; an error means the
// driver is present but answered wrongly.
func Open() (*Host, error) { return open() }

// GPUs returns the visible GPUs in CUDA ordinal order (a copy).
func (h *Host) GPUs() []GPU { return append([]GPU(nil), h.gpus...) }

// NoGPUReason says, as one clause, why GPUs is empty ("" when it is not).
func (h *Host) NoGPUReason() string { return h.noGPUReason }

// Resolve turns a --device flag into a Device. "auto" and "cuda" without a
// number pick GPU localRank modulo the visible count (one worker per GPU);
// "auto" falls back to the CPU when no GPU is visible, with the reason in
// Resolution.Fallback; "cuda"/"cuda:N" on such a host fail with ErrNoGPU and
// one sentence saying why.
func (h *Host) Resolve(flag string, localRank int) (Resolution, error) {
	return resolve(flag, h.gpus, h.noGPUReason, localRank)
}

// Stats is one sample of a GPU's counters. Fields NVML does not support on a
// device are left zero and listed in Unsupported.
type Stats struct {
	UtilGPUPercent    float64 `json:"util_gpu_pct"`
	UtilMemoryPercent float64 `json:"util_mem_pct"`
	MemoryUsedBytes   uint64  `json:"mem_used_bytes"`
	MemoryTotalBytes  uint64  `json:"mem_total_bytes"`
	TemperatureC      float64 `json:"temperature_c"`
	PowerWatts        float64 `json:"power_w"`
	// Unsupported names the counters this device would not report.
	Unsupported []string `json:"unsupported,omitempty"`
}

// ErrClosed is returned by Stats after Close (and on a host without NVML).
var ErrClosed = errors.New("devices: host closed")

// Stats samples the GPU's utilisation, memory, temperature and power. It
// returns an error for a CPU device, after Close, or when NVML fails other
// than with "not supported".
func (h *Host) Stats(d Device) (Stats, error) {
	if d.Kind != CUDA || d.GPU == nil {
		return Stats{}, fmt.Errorf("devices: stats: %s is not a GPU", d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.sampler == nil {
		return Stats{}, ErrClosed
	}
	return h.sampler.stats(d)
}

// Close shuts NVML down. It is safe to call more than once.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	if h.sampler == nil {
		return nil
	}
	return h.sampler.shutdown()
}
