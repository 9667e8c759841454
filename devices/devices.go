// Package devices owns the answer to "which accelerator does this process
// use?": it discovers NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml,
// which dlopens libnvidia-ml.so.1 at run time), applies CUDA_VISIBLE_DEVICES
// the way the CUDA driver does, resolves a `--device auto|cpu|cuda|cuda:N`
// flag to one Device, and samples per-GPU utilisation, memory, temperature and
// power for worker metrics.
//
// A host without the NVIDIA driver is an ordinary case, not an error: Open
// returns a Host with no GPUs and a one-sentence reason, `auto` resolves to
// the CPU (Resolution.Fallback says why), and `cuda`/`cuda:N` fail with that
// sentence.
//
// Typical use (fm-worker):
//
//	host, err := devices.Open()           // never fails for a missing driver
//	defer host.Close()
//	res, err := host.Resolve("auto", localRank)
//	if res.Fallback != "" { log.Info("running on cpu", "why", res.Fallback) }
//	...
//	st, err := host.Stats(res.Device)     // each metrics tick, GPUs only
//
// A Host is safe for concurrent use by several goroutines.
package devices

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind says which backend a Device runs on. The zero value is invalid.
type Kind int

const (
	// CPU is the host processor (kernels backend "cpu").
	CPU Kind = 1 + iota
	// CUDA is an NVIDIA GPU (kernels backend "cuda").
	CUDA
)

func (k Kind) String() string {
	switch k {
	case CPU:
		return "cpu"
	case CUDA:
		return "cuda"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// GPU describes one GPU visible to this process.
type GPU struct {
	// Ordinal is the CUDA device ordinal this process sees (after
	// CUDA_VISIBLE_DEVICES): the N of "cuda:N".
	Ordinal int
	// NVMLIndex is the device's index in NVML's (PCI-ordered, unfiltered) list.
	NVMLIndex int
	UUID      string
	Name      string
	// PCIBusID is "domain:bus:device.function"; the CUDA backend opens the
	// device by it (cuDeviceGetByPCIBusId), so CUDA_DEVICE_ORDER cannot make
	// NVML and CUDA disagree about which card "cuda:N" is.
	PCIBusID string
	// MemoryBytes is the device's total memory.
	MemoryBytes uint64
	// ComputeMajor, ComputeMinor: compute capability (9.0 for H100/H200).
	ComputeMajor, ComputeMinor int
}

// Device is what a worker runs on: the CPU, or one GPU.
type Device struct {
	Kind Kind
	// GPU is set when Kind == CUDA.
	GPU *GPU
}

// String renders the device as the flag spells it: "cpu" or "cuda:N".
func (d Device) String() string {
	if d.Kind == CUDA && d.GPU != nil {
		return "cuda:" + strconv.Itoa(d.GPU.Ordinal)
	}
	return d.Kind.String()
}

// Spec is a parsed --device flag.
type Spec struct {
	// Auto: pick a GPU when one is visible, else the CPU.
	Auto bool
	// Kind is CPU or CUDA when Auto is false.
	Kind Kind
	// Ordinal is the GPU asked for, or -1 for "cuda" without a number
	// (meaning: the one chosen by the local rank).
	Ordinal int
}

// ErrBadSpec is returned (wrapped) for a --device value that does not parse.
var ErrBadSpec = errors.New("devices: bad device")

// ErrNoGPU is returned (wrapped, with the reason in one sentence) when a GPU
// is asked for on a host where none is visible.
var ErrNoGPU = errors.New("devices: no GPU")

// ParseSpec parses "auto", "cpu", "cuda", "cuda:N" (also "gpu" and "gpu:N"
// as synonyms of cuda). Case and surrounding space are ignored.
func ParseSpec(s string) (Spec, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "auto", "":
		return Spec{Auto: true, Ordinal: -1}, nil
	case "cpu":
		return Spec{Kind: CPU, Ordinal: -1}, nil
	case "cuda", "gpu":
		return Spec{Kind: CUDA, Ordinal: -1}, nil
	}
	for _, prefix := range []string{"cuda:", "gpu:"} {
		if rest, ok := strings.CutPrefix(v, prefix); ok {
			n, err := strconv.Atoi(rest)
			if err != nil || n < 0 {
				return Spec{}, fmt.Errorf("%w %q: the GPU number after %q must be a non-negative integer", ErrBadSpec, s, prefix)
			}
			return Spec{Kind: CUDA, Ordinal: n}, nil
		}
	}
	return Spec{}, fmt.Errorf("%w %q: want auto, cpu, cuda or cuda:N", ErrBadSpec, s)
}

// Resolution is the outcome of resolving a --device flag.
type Resolution struct {
	Device Device
	// Fallback is set when "auto" chose the CPU: the sentence saying why no
	// GPU was used (log it; the choice is deliberate, not an error).
	Fallback string
}

// resolve is the pure core of Host.Resolve: no NVML, no environment.
// noGPUReason explains an empty gpus list; localRank picks the GPU for
// "auto"/"cuda" on multi-GPU hosts (one worker per GPU), modulo the count.
func resolve(flag string, gpus []GPU, noGPUReason string, localRank int) (Resolution, error) {
	spec, err := ParseSpec(flag)
	if err != nil {
		return Resolution{}, err
	}
	if !spec.Auto && spec.Kind == CPU {
		return Resolution{Device: Device{Kind: CPU}}, nil
	}
	if len(gpus) == 0 {
		if noGPUReason == "" {
			noGPUReason = "no GPU is visible to this process"
		}
		if spec.Auto {
			return Resolution{Device: Device{Kind: CPU}, Fallback: noGPUReason}, nil
		}
		return Resolution{}, fmt.Errorf("%w: --device %s asked for a GPU, but %s (use --device cpu or auto on this host)", ErrNoGPU, flag, noGPUReason)
	}
	ord := spec.Ordinal
	if ord < 0 {
		if localRank < 0 {
			localRank = 0
		}
		ord = localRank % len(gpus)
	}
	if ord >= len(gpus) {
		return Resolution{}, fmt.Errorf("%w: --device %s asked for GPU %d, but only %d GPU(s) are visible (cuda:0 to cuda:%d)", ErrNoGPU, flag, ord, len(gpus), len(gpus)-1)
	}
	g := gpus[ord]
	return Resolution{Device: Device{Kind: CUDA, GPU: &g}}, nil
}

// canonicalBusID writes a PCI bus id the way the CUDA runtime does
// ("0000:18:00.0"): NVML reports an 8-digit domain ("00000000:18:00.0"),
// whose leading zeros are dropped down to four digits.
func canonicalBusID(id string) string {
	domain, rest, ok := strings.Cut(id, ":")
	if !ok {
		return id
	}
	for len(domain) > 4 && domain[0] == '0' {
		domain = domain[1:]
	}
	return strings.ToLower(domain + ":" + rest)
}
