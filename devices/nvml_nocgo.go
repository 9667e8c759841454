//go:build !cgo

package devices

// open without cgo: go-nvml cannot be built, so no GPU is discovered and
// --device auto runs on the CPU (the CUDA backend itself needs no cgo, but
// device discovery and metrics do).
func open() (*Host, error) {
	return &Host{closed: true, noGPUReason: "this binary was built without cgo, so NVML cannot discover GPUs (build with CGO_ENABLED=1)"}, nil
}
