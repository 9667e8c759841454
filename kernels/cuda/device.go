package cuda

import (
	"fmt"
	"log/slog"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
)

// device is everything the backend asks of a GPU. gpu (below) is the real
// one; the tests use a recording fake, so every op's launch shapes, kernel
// names and argument kinds are checked without a GPU.
type device interface {
	// bind makes the context current on this goroutine's OS thread.
	bind() (unbind func(), err error)
	launch(name string, cfg launchCfg, args ...any) error
	gemm(g cu.GemmOp) error
	// gemmPointers runs g.Batch GEMMs whose operand addresses are in device
	// memory at ptrs (A, B, C arrays of g.Batch each).
	gemmPointers(g cu.GemmOp, ptrs cu.DevicePtr) error
	// linearBias is out = in·Wᵀ + bias in one cuBLASLt call; cu.ErrNoAlgo
	// means "use gemm + bias_add".
	linearBias(out, in, w, bias cu.DevicePtr, rows, inDim, outDim int, ab, ct cu.DataType) error
	alloc(bytes int) (cu.DevicePtr, error)
	// zero clears n floats at p (cuMemsetD32Async).
	zero(p cu.DevicePtr, n int) error
	allocManaged(bytes int) (cu.DevicePtr, error)
	free(p cu.DevicePtr) error
	copyHtoD(dst cu.DevicePtr, src unsafe.Pointer, bytes int) error
	copyDtoH(dst unsafe.Pointer, src cu.DevicePtr, bytes int) error
	memFree() (uint64, error)
	sync() error
	close() error
	info() cu.DeviceInfo
}

// gpu is a device backed by the CUDA driver, cuBLAS(Lt) and a module of
// NVRTC-compiled kernels, all on one stream of the primary context.
type gpu struct {
	ctx     *cu.Context
	stream  *cu.Stream
	blas    *cu.BLASHandle
	ws      cu.DevicePtr
	mod     *cu.Module
	funcs   map[string]*cu.Function
	devInfo cu.DeviceInfo
}

var _ device = (*gpu)(nil)

// cublasWorkspaceBytes is cuBLAS's recommended workspace on Hopper.
const cublasWorkspaceBytes = 32 << 20

// openGPU loads the libraries, retains the device's primary context,
// creates the stream and handles, and compiles (or loads from cache) the
// kernels. pciBusID selects the device when set, else ordinal.
func openGPU(ordinal int, pciBusID string, fp32Pedantic bool, cacheDir string, log *slog.Logger) (g *gpu, err error) {
	drv, err := cu.LoadDriver()
	if err != nil {
		return nil, err
	}
	var dev cu.Device
	if pciBusID != "" {
		if dev, err = drv.DeviceByPCIBusID(pciBusID); err != nil {
			// NVML's and CUDA's spellings of a bus id have differed before;
			// the ordinal names the same GPU unless CUDA_DEVICE_ORDER reorders.
			log.Warn("cuda: device by PCI bus id failed, using the ordinal", "pci_bus_id", pciBusID, "ordinal", ordinal, "err", err)
			dev, err = drv.Device(ordinal)
		}
	} else {
		dev, err = drv.Device(ordinal)
	}
	if err != nil {
		return nil, err
	}
	info, err := drv.Info(dev)
	if err != nil {
		return nil, err
	}
	if info.ComputeMajor < 8 {
		return nil, fmt.Errorf("kernels/cuda: %s has compute capability %d.%d; fmtrain needs 8.0 or newer (bf16 GEMMs)", info.Name, info.ComputeMajor, info.ComputeMinor)
	}
	blas, err := cu.LoadBLAS()
	if err != nil {
		return nil, err
	}
	rtc, err := cu.LoadNVRTC()
	if err != nil {
		return nil, err
	}
	ctx, err := drv.Retain(dev)
	if err != nil {
		return nil, err
	}
	g = &gpu{ctx: ctx, devInfo: info, funcs: map[string]*cu.Function{}}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	unbind, err := ctx.Bind()
	if err != nil {
		return nil, err
	}
	defer unbind()
	if g.stream, err = ctx.NewStream(); err != nil {
		return nil, err
	}
	if g.ws, err = ctx.MemAlloc(cublasWorkspaceBytes); err != nil {
		return nil, err
	}
	if g.blas, err = blas.NewHandle(g.stream, g.ws, cublasWorkspaceBytes, fp32Pedantic); err != nil {
		return nil, err
	}
	src, err := programSource()
	if err != nil {
		return nil, err
	}
	sigs, err := parseKernels(src)
	if err != nil {
		return nil, err
	}
	version := fmt.Sprintf("nvrtc %d.%d driver %d", rtc.Major, rtc.Minor, drv.Version)
	b, err := buildModule(rtc, version, cacheDir, src, info.ComputeMajor, info.ComputeMinor, func(img []byte) error {
		m, err := ctx.LoadModule(img)
		if err != nil {
			return err
		}
		if g.mod != nil {
			g.mod.Unload()
		}
		g.mod = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	log.Info("cuda kernels ready", "device", info.Name, "sm", fmt.Sprintf("%d.%d", info.ComputeMajor, info.ComputeMinor),
		"target", b.target.options[0], "from_cache", b.fromCache, "cache", b.cachePath, "nvrtc", fmt.Sprintf("%d.%d", rtc.Major, rtc.Minor))
	for name := range sigs {
		f, err := g.mod.Function(name)
		if err != nil {
			return nil, err
		}
		g.funcs[name] = f
	}
	return g, nil
}

func (g *gpu) bind() (func(), error) { return g.ctx.Bind() }

func (g *gpu) launch(name string, cfg launchCfg, args ...any) error {
	f, ok := g.funcs[name]
	if !ok {
		return fmt.Errorf("kernels/cuda: no kernel %s", name)
	}
	return f.Launch(g.stream, cfg.grid, cfg.block, cfg.shared, args...)
}

func (g *gpu) gemm(op cu.GemmOp) error { return g.blas.Gemm(op) }

func (g *gpu) gemmPointers(op cu.GemmOp, ptrs cu.DevicePtr) error {
	return g.blas.GemmPointers(op, ptrs)
}

func (g *gpu) linearBias(out, in, w, bias cu.DevicePtr, rows, inDim, outDim int, ab, ct cu.DataType) error {
	return g.blas.LinearBias(out, in, w, bias, rows, inDim, outDim, ab, ct)
}

func (g *gpu) alloc(bytes int) (cu.DevicePtr, error)        { return g.ctx.MemAlloc(bytes) }
func (g *gpu) zero(p cu.DevicePtr, n int) error             { return g.stream.Memset32Async(p, 0, n) }
func (g *gpu) allocManaged(bytes int) (cu.DevicePtr, error) { return g.ctx.MemAllocManaged(bytes) }
func (g *gpu) free(p cu.DevicePtr) error                    { return g.ctx.MemFree(p) }

// copyHtoD and copyDtoH run on the backend's stream, so they are ordered
// with its kernels; with pageable host memory both return only when the
// host side is done with src/dst.
func (g *gpu) copyHtoD(dst cu.DevicePtr, src unsafe.Pointer, bytes int) error {
	return g.stream.CopyHtoDAsync(dst, src, bytes)
}

func (g *gpu) copyDtoH(dst unsafe.Pointer, src cu.DevicePtr, bytes int) error {
	if err := g.stream.CopyDtoHAsync(dst, src, bytes); err != nil {
		return err
	}
	return g.stream.Synchronize()
}

func (g *gpu) memFree() (uint64, error) {
	free, _, err := g.ctx.MemInfo()
	return free, err
}

func (g *gpu) sync() error { return g.stream.Synchronize() }

func (g *gpu) info() cu.DeviceInfo { return g.devInfo }

// close releases everything openGPU made, in reverse order; the caller has
// freed its allocations.
func (g *gpu) close() error {
	unbind, err := g.ctx.Bind()
	if err != nil {
		return err
	}
	defer unbind()
	var errs []error
	if g.stream != nil {
		errs = append(errs, g.stream.Synchronize())
	}
	if g.mod != nil {
		errs = append(errs, g.mod.Unload())
	}
	if g.blas != nil {
		errs = append(errs, g.blas.Destroy())
	}
	if g.ws != 0 {
		errs = append(errs, g.ctx.MemFree(g.ws))
	}
	if g.stream != nil {
		errs = append(errs, g.stream.Destroy())
	}
	errs = append(errs, g.ctx.Release())
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
