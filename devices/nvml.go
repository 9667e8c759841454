//go:build cgo

package devices

import (
	"fmt"
	"os"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// go-nvml needs cgo (it dlopens libnvidia-ml.so.1 from C); a binary built
// without cgo gets nvml_nocgo.go's Open instead, which reports no GPU.

// Options configure OpenWith. The zero value uses the real NVML library and
// the process environment.
type Options struct {
	// NVML is the library to use; nil means nvml.New() (libnvidia-ml.so.1).
	// Tests pass github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100.New().
	NVML nvml.Interface
	// LookupEnv reads CUDA_VISIBLE_DEVICES; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

func open() (*Host, error) { return OpenWith(Options{}) }

// OpenWith is Open with injected NVML and environment.
func OpenWith(opts Options) (*Host, error) {
	lib := opts.NVML
	if lib == nil {
		lib = nvml.New()
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	h := &Host{}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			h.noGPUReason = "the NVIDIA driver is not installed on this host (libnvidia-ml.so.1 could not be loaded)"
		} else {
			h.noGPUReason = fmt.Sprintf("the NVIDIA driver did not initialise (nvmlInit: %v)", ret)
		}
		h.closed = true // nothing to shut down
		return h, nil
	}
	h.sampler = nvmlSampler{lib}
	all, err := discover(lib)
	if err != nil {
		lib.Shutdown()
		return nil, err
	}
	value, set := lookup(visibleEnv)
	h.gpus = applyVisible(value, set, all)
	switch {
	case len(all) == 0:
		h.noGPUReason = "the NVIDIA driver reports no GPU on this host"
	case len(h.gpus) == 0:
		h.noGPUReason = fmt.Sprintf("%s=%q hides all %d GPU(s) of this host", visibleEnv, value, len(all))
	}
	return h, nil
}

// discover lists every GPU NVML reports, in NVML order.
func discover(lib nvml.Interface) ([]GPU, error) {
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("devices: nvmlDeviceGetCount: %v", ret)
	}
	out := make([]GPU, 0, n)
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("devices: nvmlDeviceGetHandleByIndex(%d): %v", i, ret)
		}
		g := GPU{NVMLIndex: i, Ordinal: i}
		if g.UUID, ret = d.GetUUID(); ret != nvml.SUCCESS {
			return nil, fmt.Errorf("devices: GPU %d: nvmlDeviceGetUUID: %v", i, ret)
		}
		if g.Name, ret = d.GetName(); ret != nvml.SUCCESS {
			return nil, fmt.Errorf("devices: GPU %d: nvmlDeviceGetName: %v", i, ret)
		}
		mem, ret := d.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("devices: GPU %d: nvmlDeviceGetMemoryInfo: %v", i, ret)
		}
		g.MemoryBytes = mem.Total
		if g.ComputeMajor, g.ComputeMinor, ret = d.GetCudaComputeCapability(); ret != nvml.SUCCESS {
			return nil, fmt.Errorf("devices: GPU %d: nvmlDeviceGetCudaComputeCapability: %v", i, ret)
		}
		if pci, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
			g.PCIBusID = canonicalBusID(cString(pci.BusId[:]))
		}
		out = append(out, g)
	}
	return out, nil
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// nvmlSampler reads counters through NVML (the Host serialises calls).
type nvmlSampler struct{ lib nvml.Interface }

func (s nvmlSampler) stats(d Device) (Stats, error) {
	dev, ret := s.lib.DeviceGetHandleByIndex(d.GPU.NVMLIndex)
	if ret != nvml.SUCCESS {
		return Stats{}, fmt.Errorf("devices: stats %s: nvmlDeviceGetHandleByIndex(%d): %v", d, d.GPU.NVMLIndex, ret)
	}
	var st Stats
	check := func(what string, ret nvml.Return) error {
		switch ret {
		case nvml.SUCCESS:
			return nil
		case nvml.ERROR_NOT_SUPPORTED:
			st.Unsupported = append(st.Unsupported, what)
			return nil
		}
		return fmt.Errorf("devices: stats %s: %s: %v", d, what, ret)
	}
	util, ret := dev.GetUtilizationRates()
	if err := check("nvmlDeviceGetUtilizationRates", ret); err != nil {
		return Stats{}, err
	}
	st.UtilGPUPercent, st.UtilMemoryPercent = float64(util.Gpu), float64(util.Memory)
	mem, ret := dev.GetMemoryInfo()
	if err := check("nvmlDeviceGetMemoryInfo", ret); err != nil {
		return Stats{}, err
	}
	st.MemoryUsedBytes, st.MemoryTotalBytes = mem.Used, mem.Total
	temp, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU)
	if err := check("nvmlDeviceGetTemperature", ret); err != nil {
		return Stats{}, err
	}
	st.TemperatureC = float64(temp)
	mw, ret := dev.GetPowerUsage()
	if err := check("nvmlDeviceGetPowerUsage", ret); err != nil {
		return Stats{}, err
	}
	st.PowerWatts = float64(mw) / 1000
	return st, nil
}

func (s nvmlSampler) shutdown() error {
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("devices: nvmlShutdown: %v", ret)
	}
	return nil
}
