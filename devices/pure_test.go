package devices

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	good := map[string]Spec{
		"auto":     {Auto: true, Ordinal: -1},
		"":         {Auto: true, Ordinal: -1},
		"cpu":      {Kind: CPU, Ordinal: -1},
		" CPU ":    {Kind: CPU, Ordinal: -1},
		"cuda":     {Kind: CUDA, Ordinal: -1},
		"gpu":      {Kind: CUDA, Ordinal: -1},
		"cuda:0":   {Kind: CUDA, Ordinal: 0},
		"cuda:13":  {Kind: CUDA, Ordinal: 13},
		"gpu:2":    {Kind: CUDA, Ordinal: 2},
		"CUDA:1  ": {Kind: CUDA, Ordinal: 1},
	}
	for in, want := range good {
		got, err := ParseSpec(in)
		if err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"cuda:", "cuda:-1", "cuda:x", "tpu", "cuda0", "cuda:1.5", "rocm:0"} {
		_, err := ParseSpec(in)
		if !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseSpec(%q) error %v: want ErrBadSpec naming the value", in, err)
		}
	}
}

// TestResolveNoGPU is Resolve's pure core on a host without GPUs, as a
// binary built without cgo sees every host.
func TestResolveNoGPU(t *testing.T) {
	const why = "this binary was built without cgo, so NVML cannot discover GPUs (build with CGO_ENABLED=1)"
	r, err := resolve("auto", nil, why, 1)
	if err != nil || r.Device.Kind != CPU || r.Fallback != why {
		t.Errorf("auto: %+v, %v", r, err)
	}
	_, err = resolve("cuda:0", nil, why, 0)
	if !errors.Is(err, ErrNoGPU) || !strings.Contains(err.Error(), "--device cuda:0 asked for a GPU, but "+why) {
		t.Errorf("cuda:0: %v", err)
	}
	if r, err := resolve("cpu", []GPU{{}}, "", 0); err != nil || r.Device.String() != "cpu" {
		t.Errorf("cpu with GPUs: %+v %v", r, err)
	}
	h, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if len(h.GPUs()) == 0 && h.NoGPUReason() == "" {
		t.Error("no GPUs and no reason")
	}
	if _, err := h.Stats(Device{Kind: CUDA, GPU: &GPU{}}); len(h.GPUs()) == 0 && !errors.Is(err, ErrClosed) {
		t.Errorf("stats without GPUs: %v", err)
	}
}

func TestCanonicalBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:18:00.0": "0000:18:00.0",
		"00000001:AB:00.0": "0001:ab:00.0",
		"0000:3b:00.0":     "0000:3b:00.0",
		"10000000:01:00.0": "10000000:01:00.0",
		"":                 "",
	} {
		if got := canonicalBusID(in); got != want {
			t.Errorf("canonicalBusID(%q) = %q, want %q", in, got, want)
		}
	}
}
