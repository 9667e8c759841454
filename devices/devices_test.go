//go:build cgo

package devices

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

func env(vals map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
}

// dgx returns the 8×H100 mock with stats functions and PCI ids filled in
// (the mock leaves them unset).
func dgx(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		i := i
		dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			var p nvml.PciInfo
			for j, c := range fmt.Sprintf("00000000:%02X:00.0", 0x18+i) {
				p.BusId[j] = int8(c)
			}
			return p, nvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i), Memory: uint32(i)}, nvml.SUCCESS
		}
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return uint32(40 + i), nvml.SUCCESS }
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(300500 + i), nvml.SUCCESS }
		dev.MemoryInfo.Used = uint64(i) << 30
	}
	return s
}

func TestDiscoverDGXH100(t *testing.T) {
	h, err := OpenWith(Options{NVML: dgx(t), LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	gpus := h.GPUs()
	if len(gpus) != 8 || h.NoGPUReason() != "" {
		t.Fatalf("got %d GPUs, reason %q; want 8 and none", len(gpus), h.NoGPUReason())
	}
	for i, g := range gpus {
		if g.Ordinal != i || g.NVMLIndex != i {
			t.Errorf("gpu %d: ordinal %d nvml index %d", i, g.Ordinal, g.NVMLIndex)
		}
		if g.Name != "NVIDIA H100 80GB HBM3" || g.MemoryBytes != 80<<30 || g.ComputeMajor != 9 || g.ComputeMinor != 0 {
			t.Errorf("gpu %d: %+v", i, g)
		}
		if !strings.HasPrefix(g.UUID, "GPU-") {
			t.Errorf("gpu %d: uuid %q", i, g.UUID)
		}
		if want := fmt.Sprintf("0000:%02x:00.0", 0x18+i); g.PCIBusID != want {
			t.Errorf("gpu %d: pci %q want %q", i, g.PCIBusID, want)
		}
	}
}

func TestCUDAVisibleDevices(t *testing.T) {
	s := dgx(t)
	uuid := func(i int) string { return s.Devices[i].(*server.Device).UUID }
	cases := []struct {
		name  string
		value *string
		want  []int // NVML indices, in ordinal order
	}{
		{"unset", nil, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"empty hides all", ptr(""), nil},
		{"indices reorder", ptr("3,1"), []int{3, 1}},
		{"spaces", ptr(" 2 , 5 "), []int{2, 5}},
		{"stops at first invalid", ptr("0,1,-1,2"), []int{0, 1}},
		{"out of range stops", ptr("7,8,0"), []int{7}},
		{"duplicate stops", ptr("4,4,5"), []int{4}},
		{"full uuid", ptr(uuid(6) + ",0"), []int{6, 0}},
		{"uuid prefix", ptr(uuid(2)[:16]), []int{2}},
		{"unknown uuid", ptr("GPU-ffffffff-0000"), nil},
		{"MIG unsupported", ptr("MIG-0,1"), nil},
		{"garbage", ptr("abc"), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vals := map[string]string{}
			if c.value != nil {
				vals[visibleEnv] = *c.value
			}
			h, err := OpenWith(Options{NVML: s, LookupEnv: env(vals)})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			var got []int
			for i, g := range h.GPUs() {
				if g.Ordinal != i {
					t.Errorf("ordinal %d at position %d", g.Ordinal, i)
				}
				got = append(got, g.NVMLIndex)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("%s=%v: got NVML indices %v, want %v", visibleEnv, c.value, got, c.want)
			}
			if len(got) == 0 && !strings.Contains(h.NoGPUReason(), visibleEnv) {
				t.Errorf("reason %q should name %s", h.NoGPUReason(), visibleEnv)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestResolveWithGPUs(t *testing.T) {
	h, err := OpenWith(Options{NVML: dgx(t), LookupEnv: env(map[string]string{visibleEnv: "5,6,7"})})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cases := []struct {
		flag      string
		localRank int
		want      string
		nvmlIndex int
	}{
		{"auto", 0, "cuda:0", 5},
		{"auto", 2, "cuda:2", 7},
		{"auto", 4, "cuda:1", 6}, // more workers than GPUs: wrap round
		{"cuda", 1, "cuda:1", 6},
		{"cuda:2", 0, "cuda:2", 7},
		{"cpu", 0, "cpu", -1},
	}
	for _, c := range cases {
		r, err := h.Resolve(c.flag, c.localRank)
		if err != nil {
			t.Fatalf("Resolve(%q, %d): %v", c.flag, c.localRank, err)
		}
		if r.Device.String() != c.want || r.Fallback != "" {
			t.Errorf("Resolve(%q, %d) = %s (fallback %q), want %s", c.flag, c.localRank, r.Device, r.Fallback, c.want)
		}
		if c.nvmlIndex >= 0 && r.Device.GPU.NVMLIndex != c.nvmlIndex {
			t.Errorf("Resolve(%q, %d): NVML index %d want %d", c.flag, c.localRank, r.Device.GPU.NVMLIndex, c.nvmlIndex)
		}
	}
	_, err = h.Resolve("cuda:3", 0)
	if !errors.Is(err, ErrNoGPU) || !strings.Contains(err.Error(), "only 3 GPU(s) are visible") {
		t.Errorf("cuda:3 with 3 visible: %v", err)
	}
	if _, err := h.Resolve("cuda:x", 0); !errors.Is(err, ErrBadSpec) {
		t.Errorf("bad flag: %v", err)
	}
}

// noDriver is NVML as seen on a host without the NVIDIA driver: Init fails
// with ERROR_LIBRARY_NOT_FOUND (what the real library returns here).
func noDriver() nvml.Interface {
	s := dgxh100.New()
	s.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	s.DeviceGetCountFunc = func() (int, nvml.Return) { panic("DeviceGetCount after failed Init") }
	return s
}

func TestNoDriver(t *testing.T) {
	h, err := OpenWith(Options{NVML: noDriver(), LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, err := h.Resolve("auto", 3)
	if err != nil || r.Device.Kind != CPU || !strings.Contains(r.Fallback, "libnvidia-ml.so.1") {
		t.Fatalf("auto without driver: %+v, %v; want cpu with a fallback reason", r, err)
	}
	for _, flag := range []string{"cuda", "cuda:0"} {
		_, err := h.Resolve(flag, 0)
		if !errors.Is(err, ErrNoGPU) {
			t.Fatalf("%s without driver: %v, want ErrNoGPU", flag, err)
		}
		msg := err.Error()
		// One clear sentence: names the flag and the cause, no line breaks,
		// exactly one full stop-free clause chain ending the message.
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "--device "+flag) || !strings.Contains(msg, "NVIDIA driver is not installed") {
			t.Errorf("%s: error %q is not one clear sentence naming the flag and cause", flag, msg)
		}
	}
	if _, err := h.Stats(Device{Kind: CUDA, GPU: &GPU{}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats without driver: %v", err)
	}
}

// TestRealNVML runs the real go-nvml on whatever host runs the tests: on a
// machine without the driver (CI) it must report no GPU and fall back; on a
// GPU host it must find at least one and resolve cuda:0.
func TestRealNVML(t *testing.T) {
	h, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, err := h.Resolve("auto", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GPUs()) == 0 {
		if r.Device.Kind != CPU || r.Fallback == "" {
			t.Errorf("no GPUs but auto gave %+v", r)
		}
		if _, err := h.Resolve("cuda", 0); !errors.Is(err, ErrNoGPU) {
			t.Errorf("cuda on a host without GPUs: %v", err)
		}
		t.Logf("no GPU: %s", h.NoGPUReason())
		return
	}
	if r.Device.String() != "cuda:0" {
		t.Errorf("auto with GPUs gave %s", r.Device)
	}
	st, err := h.Stats(r.Device)
	if err != nil || st.MemoryTotalBytes == 0 {
		t.Errorf("stats: %+v, %v", st, err)
	}
}

func TestStats(t *testing.T) {
	s := dgx(t)
	d5 := s.Devices[5].(*server.Device)
	d5.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	h, err := OpenWith(Options{NVML: s, LookupEnv: env(map[string]string{visibleEnv: "3,5"})})
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Resolve("cuda:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent samplers (metrics goroutine + status endpoint) are allowed.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := h.Stats(r.Device)
			if err != nil {
				t.Error(err)
				return
			}
			want := Stats{UtilGPUPercent: 30, UtilMemoryPercent: 3, MemoryUsedBytes: 3 << 30, MemoryTotalBytes: 80 << 30, TemperatureC: 43, PowerWatts: 300.503}
			if fmt.Sprint(st) != fmt.Sprint(want) {
				t.Errorf("stats of NVML GPU 3: %+v want %+v", st, want)
			}
		}()
	}
	wg.Wait()
	r1, _ := h.Resolve("cuda:1", 0)
	st, err := h.Stats(r1.Device)
	if err != nil || st.PowerWatts != 0 || fmt.Sprint(st.Unsupported) != "[nvmlDeviceGetPowerUsage]" || st.TemperatureC != 45 {
		t.Errorf("GPU without power reading: %+v, %v", st, err)
	}
	d5.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	if _, err := h.Stats(r1.Device); err == nil || !strings.Contains(err.Error(), "nvmlDeviceGetTemperature") {
		t.Errorf("lost GPU: %v", err)
	}
	if _, err := h.Stats(Device{Kind: CPU}); err == nil {
		t.Error("stats of cpu should fail")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stats(r.Device); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}
