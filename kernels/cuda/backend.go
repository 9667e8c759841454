// Package cuda is the CUDA kernels.Backend: GEMMs through cuBLAS/cuBLASLt,
// every other FM-DiT op as a CUDA C kernel (the .cu files of this folder,
// compiled by NVRTC for the device at start-up and cached on disk by source
// hash), buffers from managed memory, and a fused AdamW.
//
// Two backends are registered: "cuda" (mixed precision: saved activations
// in bf16 storage, GEMM and attention operands in bf16, fp32 accumulation,
// fp32 master weights, gradients, optimizer state and all arithmetic) and
// "cuda-fp32" (strict fp32, TF32 off: the path checked against the
// reference vectors). A main package that wants them imports this package
// for its side effect:
//
//	import _ "github.com/fmtrain/fmtrain/kernels/cuda"
//
// Attention runs as batched cuBLAS GEMMs over score blocks or as fused
// FlashAttention-style kernels (flash_attention.cu); Options.Attention
// ($FMTRAIN_CUDA_ATTENTION) chooses, and each backend has its default.
//
// Opening either on a host without the driver returns an error saying which
// library is missing; callers fall back to "cpu" on purpose.
//
// Memory: kernels.Allocator's Alloc returns Go slices over CUDA managed
// memory, which both the host and the GPU address, so the model's flat
// parameter, gradient and activation buffers live on the GPU with no copies.
// Ops also accept ordinary Go slices (the pipeline's inputs): those are
// staged through device scratch from a caching allocator and copied back
// when written. AllocActivations (kernels.ActivationAllocator) hands out
// bf16 device storage behind handles the host cannot touch; the ops that
// take activations read and write it (see bf16Stores and op.act). Work is
// asynchronous on one stream; call Synchronize before reading results on
// the host. A CUDA failure is sticky: later ops do nothing and Synchronize
// returns the first error.
//
// A Backend is used by one goroutine at a time (kernels.Backend's contract);
// each call binds the device's primary context to its OS thread.
package cuda

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/kernels"
)

func init() {
	kernels.Register("cuda", func() (kernels.Backend, error) {
		return Open(optionsFromEnv(true))
	})
	kernels.Register("cuda-fp32", func() (kernels.Backend, error) {
		return Open(optionsFromEnv(false))
	})
}

// Options configure Open.
type Options struct {
	// Ordinal is the CUDA device ordinal (after CUDA_VISIBLE_DEVICES), used
	// when PCIBusID is empty.
	Ordinal int
	// PCIBusID selects the device by bus id (devices.GPU.PCIBusID), which
	// cannot disagree with NVML about which card is which.
	PCIBusID string
	// BF16 selects mixed precision; false is strict fp32 (TF32 off).
	BF16 bool
	// CacheDir holds compiled kernels; "" means $FMTRAIN_CUDA_CACHE or the
	// user cache folder. "-" disables the cache.
	CacheDir string
	// Logger receives start-up and fallback messages; nil discards them.
	Logger *slog.Logger
	// Async lets ops return before the GPU has run them (faster). The
	// caller must then call Synchronize before the host reads or writes
	// any buffer an op has used since the last Synchronize. Without it
	// every op waits for the GPU, so host code may touch buffers between
	// ops freely. $FMTRAIN_CUDA_ASYNC=1 sets it for the registry's backends.
	Async bool
	// HostMemory makes Alloc return ordinary Go memory instead of CUDA
	// managed memory: every op then stages its buffers through device
	// scratch (slower, but no unified memory involved, for platforms where
	// it misbehaves). $FMTRAIN_CUDA_MANAGED=0 sets it for the registry's
	// backends.
	HostMemory bool
	// Attention picks the attention implementation: "fused" for the fused
	// kernels wherever they apply (head dims up to 128), the cuBLAS path
	// elsewhere; "gemm" for the cuBLAS path always; "" for the default:
	// "fused", except with BF16 on a device before sm_80, where the fused
	// kernels cannot use tensor cores and cuBLAS's bf16 GEMMs should be
	// 2–3.5× faster despite moving score blocks through memory. (By
	// estimate, unmeasured: scripts/gpu-check.sh times both.)
	// $FMTRAIN_CUDA_ATTENTION sets it for the registry's backends.
	Attention string
	// FP32Activations makes the mixed-precision backend decline
	// AllocActivations, so the model keeps its activations in float32
	// (twice the memory; the fallback should bf16 storage misbehave).
	// $FMTRAIN_CUDA_ACTIVATIONS=fp32 sets it for the registry's backends.
	FP32Activations bool
}

// attnMode is the parsed Options.Attention.
type attnMode int

const (
	attnFused attnMode = iota
	attnGEMM
)

// parseAttention reads Options.Attention for a device of compute
// capability major.
func parseAttention(s string, bf16 bool, major int) (attnMode, error) {
	switch {
	case s == "fused", s == "" && !(bf16 && major < 8):
		return attnFused, nil
	case s == "gemm", s == "":
		return attnGEMM, nil
	}
	return 0, fmt.Errorf("kernels/cuda: attention implementation %q: want fused or gemm (FMTRAIN_CUDA_ATTENTION)", s)
}

// optionsFromEnv reads FMTRAIN_CUDA_DEVICE (an ordinal or a PCI bus id) for
// the registry's factories, which take no arguments.
func optionsFromEnv(bf16 bool) Options {
	o := Options{BF16: bf16, Async: os.Getenv("FMTRAIN_CUDA_ASYNC") == "1", HostMemory: os.Getenv("FMTRAIN_CUDA_MANAGED") == "0",
		Attention: os.Getenv("FMTRAIN_CUDA_ATTENTION"), FP32Activations: os.Getenv("FMTRAIN_CUDA_ACTIVATIONS") == "fp32"}
	if v := os.Getenv("FMTRAIN_CUDA_DEVICE"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			o.Ordinal = n
		} else {
			o.PCIBusID = v
		}
	}
	return o
}

// Backend is the CUDA implementation of kernels.Backend.
type Backend struct {
	dev  device
	bf16 bool
	log  *slog.Logger
	sms  int
	sigs map[string][]argKind
	pool *pool
	mm   managed
	// allocs are the managed allocations by base address, freed on Close.
	allocs map[uintptr]cu.DevicePtr
	// stores are AllocActivations' bf16 buffers and handles their address
	// reservations, both freed on Close.
	stores  bf16Stores
	handles [][]byte
	// fp32Activations: AllocActivations declines (Options.FP32Activations).
	fp32Activations bool
	// tensorCores: the device has bf16 mma (sm_80 and later), so the
	// mixed-precision backend's fused attention forward uses it.
	tensorCores bool
	// async: ops return before the GPU ran them (Options.Async).
	async bool
	// hostMemory: Alloc hands out Go memory (Options.HostMemory).
	hostMemory bool
	// attention: fused kernels or the cuBLAS path (Options.Attention).
	attention attnMode
	// err is the first failure; every later op is skipped.
	err    error
	closed bool
}

var (
	_ kernels.Backend      = (*Backend)(nil)
	_ kernels.Allocator    = (*Backend)(nil)
	_ kernels.Synchronizer = (*Backend)(nil)
	_ kernels.Closer       = (*Backend)(nil)

	_ kernels.ActivationAllocator = (*Backend)(nil)
)

// Open opens a device. It fails on a host without the CUDA driver (the
// error wraps cuda.ErrLibraryNotFound and names libcuda.so.1), without
// cuBLAS or NVRTC, when the kernels do not compile, or for an unknown
// Options.Attention.
func Open(opts Options) (*Backend, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// An unknown implementation fails before the device is touched.
	if _, err := parseAttention(opts.Attention, opts.BF16, 0); err != nil {
		return nil, err
	}
	cacheDir := opts.CacheDir
	switch cacheDir {
	case "":
		cacheDir = defaultCacheDir()
	case "-":
		cacheDir = ""
	}
	g, err := openGPU(opts.Ordinal, opts.PCIBusID, !opts.BF16, cacheDir, log)
	if err != nil {
		if errors.Is(err, cu.ErrLibraryNotFound) {
			return nil, fmt.Errorf("kernels/cuda: CUDA is not usable on this host: %w", err)
		}
		return nil, fmt.Errorf("kernels/cuda: %w", err)
	}
	b, err := newBackend(g, opts.BF16, log)
	if err != nil {
		g.close()
		return nil, err
	}
	attention, _ := parseAttention(opts.Attention, opts.BF16, g.info().ComputeMajor)
	b.async, b.hostMemory, b.attention, b.fp32Activations = opts.Async, opts.HostMemory, attention, opts.FP32Activations
	if !g.info().ConcurrentManagedAccess && !b.hostMemory {
		// Without concurrent managed access the host may not touch managed
		// memory while any kernel runs (the bucket reducer would), so use
		// host memory and stage it.
		log.Warn("cuda: the device lacks concurrent managed access; using host memory with staging")
		b.hostMemory = true
	}
	log.Info("cuda backend open", "backend", b.String(), "async", b.async, "managed_memory", !b.hostMemory, "attention", [...]string{"fused", "gemm"}[b.attention],
		"bf16_activations", b.bf16 && !b.fp32Activations)
	return b, nil
}

// newBackend wraps a device (the real GPU or the tests' fake).
func newBackend(dev device, bf16 bool, log *slog.Logger) (*Backend, error) {
	src, err := programSource()
	if err != nil {
		return nil, err
	}
	sigs, err := parseKernels(src)
	if err != nil {
		return nil, err
	}
	b := &Backend{dev: dev, bf16: bf16, log: log, sms: max(dev.info().Multiprocessors, 1), sigs: sigs, allocs: map[uintptr]cu.DevicePtr{},
		stores: bf16Stores{dev: map[uintptr]cu.DevicePtr{}}, tensorCores: dev.info().ComputeMajor >= 8}
	b.pool = newPool(dev.alloc, dev.free)
	return b, nil
}

// Name implements kernels.Backend.
func (b *Backend) Name() string {
	if b.bf16 {
		return "cuda"
	}
	return "cuda-fp32"
}

// fail records the first error.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
		b.log.Error("cuda backend failed; later ops are skipped", "err", err)
	}
}

// managedReserve is the device memory Alloc leaves free for scratch,
// cuBLAS and the driver; managed memory beyond the free memory can hang
// the GPU, so Alloc never asks for it.
const managedReserve = 2 << 30

// Alloc implements kernels.Allocator: n zeroed floats of managed memory,
// valid until Close. When the device is short of memory it returns host
// memory instead (ops stage it, slower but correct) and logs a warning.
func (b *Backend) Alloc(n int) []float32 {
	if n <= 0 {
		return nil
	}
	if b.hostMemory {
		return make([]float32, n)
	}
	bytes := (n*4 + 255) &^ 255
	s, err := b.allocManaged(bytes, n)
	if err != nil {
		b.log.Warn("cuda: managed allocation refused, using host memory", "floats", n, "err", err)
		return make([]float32, n)
	}
	return s
}

func (b *Backend) allocManaged(bytes, n int) ([]float32, error) {
	if b.closed {
		return nil, errors.New("backend closed")
	}
	unbind, err := b.dev.bind()
	if err != nil {
		return nil, err
	}
	defer unbind()
	free, err := b.dev.memFree()
	if err != nil {
		return nil, err
	}
	if uint64(bytes)+managedReserve > free {
		return nil, fmt.Errorf("%d bytes asked, %d free on the device (keeping %d in reserve)", bytes, free, managedReserve)
	}
	p, err := b.dev.allocManaged(bytes)
	if err != nil {
		return nil, err
	}
	s := unsafe.Slice((*float32)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), n)
	clear(s)
	lo := uintptr(p)
	b.mm.add(lo, lo+uintptr(bytes))
	b.allocs[lo] = p
	return s, nil
}

// AllocActivations implements kernels.ActivationAllocator on the
// mixed-precision backend: room for n activations as bf16 device memory
// behind a handle (see bf16Stores), valid until Close. It declines on
// cuda-fp32, with Options.FP32Activations, and when the device is short of
// memory (keeping managedReserve free, as Alloc does).
func (b *Backend) AllocActivations(n int) ([]float32, error) {
	switch {
	case !b.bf16:
		return nil, errors.New("kernels/cuda: the fp32 backend keeps activations in float32")
	case b.fp32Activations:
		return nil, errors.New("kernels/cuda: bf16 activation storage is switched off (FMTRAIN_CUDA_ACTIVATIONS=fp32)")
	case b.closed:
		return nil, errors.New("kernels/cuda: AllocActivations after Close")
	case n <= 0:
		return nil, nil
	}
	unbind, err := b.dev.bind()
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: AllocActivations: %w", err)
	}
	defer unbind()
	bytes := (2*n + 255) &^ 255
	free, err := b.dev.memFree()
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: AllocActivations: %w", err)
	}
	if uint64(bytes)+managedReserve > free {
		return nil, fmt.Errorf("kernels/cuda: AllocActivations: %d bytes asked, %d free on the device (keeping %d in reserve)", bytes, free, managedReserve)
	}
	handle, err := reserveHandle(4 * n)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: AllocActivations: %w", err)
	}
	p, err := b.dev.alloc(bytes)
	if err == nil {
		// Zeroed, so a value read before it is written is 0 on every run.
		err = b.dev.zero(p, bytes/4)
	}
	if err != nil {
		releaseHandle(handle)
		return nil, fmt.Errorf("kernels/cuda: AllocActivations: %w", err)
	}
	base := unsafe.Pointer(unsafe.SliceData(handle))
	lo := uintptr(base)
	b.stores.handles.add(lo, lo+uintptr(4*n))
	b.stores.dev[lo] = p
	b.handles = append(b.handles, handle)
	return unsafe.Slice((*float32)(base), n), nil
}

// DeviceMemoryInUse is the device's total memory less its free memory:
// this process's allocations, the driver's and any other process's.
func (b *Backend) DeviceMemoryInUse() (uint64, error) {
	unbind, err := b.dev.bind()
	if err != nil {
		return 0, err
	}
	defer unbind()
	free, err := b.dev.memFree()
	if err != nil {
		return 0, err
	}
	return b.dev.info().TotalMemory - min(free, b.dev.info().TotalMemory), nil
}

// Synchronize implements kernels.Synchronizer.
func (b *Backend) Synchronize() error {
	if b.err != nil {
		return b.err
	}
	unbind, err := b.dev.bind()
	if err != nil {
		b.fail(err)
		return err
	}
	defer unbind()
	b.fail(b.dev.sync())
	return b.err
}

// Close frees every allocation (slices from Alloc become invalid) and the
// device's resources.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	unbind, err := b.dev.bind()
	if err != nil {
		return err
	}
	errs := []error{b.dev.sync()}
	for lo, p := range b.allocs {
		errs = append(errs, b.dev.free(p))
		b.mm.remove(lo)
	}
	for lo, p := range b.stores.dev {
		errs = append(errs, b.dev.free(p))
		b.stores.handles.remove(lo)
	}
	for _, h := range b.handles {
		errs = append(errs, releaseHandle(h))
	}
	b.handles = nil
	b.pool.trim()
	for p := range b.pool.inUse {
		errs = append(errs, b.dev.free(p))
	}
	unbind()
	errs = append(errs, b.dev.close())
	return errors.Join(errs...)
}

// op is one backend call in progress: its staged arguments, its scratch
// and its bound context.
type op struct {
	b       *Backend
	name    string
	st      stager
	unbind  func()
	scratch []cu.DevicePtr
	ok      bool
}

// begin starts an op; it returns nil when an earlier error stopped the backend.
func (b *Backend) begin(name string) *op {
	if b.err != nil {
		return nil
	}
	if b.closed {
		b.fail(fmt.Errorf("kernels/cuda: %s after Close", name))
		return nil
	}
	return &op{b: b, name: name}
}

// arg registers the first n floats of s (nil allowed), a float32 argument,
// and returns its index.
func (o *op) arg(s []float32, n int, write bool) int {
	return o.st.add(&o.b.mm, &o.b.stores, s, n, write, false)
}

// act registers an activation argument: float32, or bf16 storage from
// AllocActivations (see bf and storage).
func (o *op) act(s []float32, n int, write bool) int {
	return o.st.add(&o.b.mm, &o.b.stores, s, n, write, true)
}

// bf reports whether argument i is bf16 storage.
func (o *op) bf(i int) bool { return o.st.args[i].bf16 }

// storage is a kernel's st flags: bit k set when argument args[k] (an
// index from arg or act, or -1 for a tensor that is always float32) is
// bf16 storage.
func (o *op) storage(args ...int) int32 {
	var st int32
	for k, i := range args {
		if i >= 0 && o.bf(i) {
			st |= 1 << k
		}
	}
	return st
}

// inBF16 reports whether device address p lies in an argument that is bf16
// storage (a GEMM operand or output there is used as bf16 as it is).
func (o *op) inBF16(p cu.DevicePtr) bool {
	for _, a := range o.st.args {
		if a.bf16 && p >= a.dev && p < a.dev+cu.DevicePtr((a.hi-a.lo)/2) {
			return true
		}
	}
	return false
}

// start binds the context and stages host arguments to the device.
func (o *op) start() bool {
	unbind, err := o.b.dev.bind()
	if err != nil {
		o.b.fail(err)
		return false
	}
	o.unbind = unbind
	if i := o.st.misplacedBF16(); i >= 0 {
		return o.failf(fmt.Errorf("argument %d of %d is bf16 activation storage (AllocActivations), which this op takes only for activations", i+1, len(o.st.args)))
	}
	o.st.plan()
	for i := range o.st.regions {
		r := &o.st.regions[i]
		p, err := o.scratchBytes(int(r.hi - r.lo))
		if err != nil {
			return o.failf(err)
		}
		r.dev = p
		if err := o.b.dev.copyHtoD(p, r.p, int(r.hi-r.lo)); err != nil {
			return o.failf(err)
		}
	}
	o.ok = true
	return true
}

func (o *op) failf(err error) bool {
	o.b.fail(fmt.Errorf("kernels/cuda: %s: %w", o.name, err))
	o.ok = false
	return false
}

// p is the device address of argument i.
func (o *op) p(i int) cu.DevicePtr { return o.st.ptr(i) }

func (o *op) scratchBytes(bytes int) (cu.DevicePtr, error) {
	p, err := o.b.pool.get(bytes)
	if err != nil {
		return 0, err
	}
	o.scratch = append(o.scratch, p)
	return p, nil
}

// scratchBytesOK is scratchBytes that records a failure (0 after one).
func (o *op) scratchBytesOK(bytes int) (cu.DevicePtr, bool) {
	if !o.ok {
		return 0, false
	}
	p, err := o.scratchBytes(bytes)
	if err != nil {
		o.failf(err)
		return 0, false
	}
	return p, true
}

// scratch32 returns device scratch for n floats (0 after a failure).
func (o *op) scratch32(n int) cu.DevicePtr {
	if !o.ok {
		return 0
	}
	p, err := o.scratchBytes(n * 4)
	if err != nil {
		o.failf(err)
	}
	return p
}

// launch runs a kernel after checking its arguments and shape.
func (o *op) launch(kernel string, cfg launchCfg, args ...any) {
	if !o.ok {
		return
	}
	sig, ok := o.b.sigs[kernel]
	if !ok {
		o.failf(fmt.Errorf("no kernel %s in the program", kernel))
		return
	}
	if err := checkArgs(kernel, sig, args); err != nil {
		o.failf(err)
		return
	}
	if err := cfg.validate(kernel); err != nil {
		o.failf(err)
		return
	}
	if err := o.b.dev.launch(kernel, cfg, args...); err != nil {
		o.failf(err)
	}
}

// elementwise launches kernel over n elements.
func (o *op) elementwise(kernel string, n int64, args ...any) {
	if n <= 0 {
		return
	}
	o.launch(kernel, elementwiseCfg(n, o.b.sms), args...)
}

// end copies written staged regions back, returns scratch and unbinds.
func (o *op) end() {
	if o.ok {
		for _, r := range o.st.regions {
			if r.write {
				if err := o.b.dev.copyDtoH(r.p, r.dev, int(r.hi-r.lo)); err != nil {
					o.failf(err)
					break
				}
			}
		}
	}
	if o.ok && !o.b.async {
		if err := o.b.dev.sync(); err != nil {
			o.failf(err)
		}
	}
	for _, p := range o.scratch {
		o.b.pool.put(p)
	}
	if o.unbind != nil {
		o.unbind()
	}
}

// gemmSpan is the elements a row-major operand of rows×cols with row
// stride ld spans over batch matrices stride apart.
func gemmSpan(rows, cols, ld, batch int, stride int64) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return int(int64(max(batch, 1)-1)*stride) + (rows-1)*ld + cols
}

// gemm runs g (fp32 pointers, or pointers into bf16 storage); on the
// mixed-precision path A and B are first rounded to bf16 copies in scratch
// unless they are bf16 storage already, and a C in bf16 storage is written
// as bf16.
func (o *op) gemm(g cu.GemmOp) {
	if !o.ok || g.M == 0 || g.N == 0 {
		return
	}
	if g.K == 0 {
		o.launch("scale_matrix", elementwiseCfg(int64(g.M)*int64(g.N), o.b.sms), g.C, int64(g.M), int32(g.N), int32(g.Ldc), g.Beta)
		return
	}
	g.AB = cu.R32F
	if o.b.bf16 {
		rowsA, colsA := g.M, g.K
		if g.TransA {
			rowsA, colsA = g.K, g.M
		}
		rowsB, colsB := g.K, g.N
		if g.TransB {
			rowsB, colsB = g.N, g.K
		}
		g.A = o.operand(g.A, gemmSpan(rowsA, colsA, g.Lda, g.Batch, g.StrideA))
		g.B = o.operand(g.B, gemmSpan(rowsB, colsB, g.Ldb, g.Batch, g.StrideB))
		g.AB = cu.R16BF
		if o.inBF16(g.C) {
			g.CT = cu.R16BF
		}
	}
	if !o.ok {
		return
	}
	if err := o.b.dev.gemm(g); err != nil {
		o.failf(err)
	}
}

// operand is the bf16 GEMM operand of n values at p: p itself when it is
// bf16 storage, else a rounded copy (toBF16).
func (o *op) operand(p cu.DevicePtr, n int) cu.DevicePtr {
	if o.inBF16(p) {
		return p
	}
	return o.toBF16(p, n)
}

// toBF16 rounds n floats at p into a bf16 scratch copy.
func (o *op) toBF16(p cu.DevicePtr, n int) cu.DevicePtr {
	if !o.ok {
		return 0
	}
	dst, err := o.scratchBytes(n * 2)
	if err != nil {
		o.failf(err)
		return 0
	}
	o.elementwise("cast_bf16", int64(n), dst, p, int64(n))
	return dst
}

// colsum adds, for each of Z matrices a (+ z·R·C) [R,C], the column sums of
// a (or of a⊙b when b != 0) into dst[z·dstStride + c]; st is
// colsum_partial's (bit 1 a, bit 2 b in bf16 storage).
func (o *op) colsum(dst, a, b cu.DevicePtr, R, C, Z, dstStride int, st int32) {
	if !o.ok || R == 0 || C == 0 || Z == 0 || dst == 0 {
		return
	}
	plan := colsumCfg(R, C, Z)
	partial := o.scratch32(plan.partialFloats)
	o.launch("colsum_partial", plan.partial, partial, a, b, int32(R), int32(C), int32(plan.rowsPerChunk), st)
	o.elementwise("colsum_finalize", int64(Z)*int64(C), dst, partial, int32(plan.chunks), int32(C), int32(Z), int32(dstStride))
}

// off offsets a device pointer by n floats.
func off(p cu.DevicePtr, n int) cu.DevicePtr {
	if p == 0 {
		return 0
	}
	return p + cu.DevicePtr(n*4)
}

// Gemm implements kernels.Backend.
func (b *Backend) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, bm []float32, ldb int, beta float32, c []float32, ldc int) {
	b.GemmBatched(transA, transB, m, n, k, alpha, a, lda, 0, bm, ldb, 0, beta, c, ldc, 0, 1)
}

// GemmBatched implements kernels.Backend.
func (b *Backend) GemmBatched(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, bm []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	o := b.begin("GemmBatched")
	if o == nil || m == 0 || n == 0 || batch == 0 {
		return
	}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	ia := o.arg(a, gemmSpan(rowsA, colsA, lda, batch, int64(strideA)), false)
	ib := o.arg(bm, gemmSpan(rowsB, colsB, ldb, batch, int64(strideB)), false)
	ic := o.arg(c, gemmSpan(m, n, ldc, batch, int64(strideC)), true)
	if o.start() {
		if k == 0 {
			for i := 0; i < batch; i++ {
				o.gemm(cu.GemmOp{M: m, N: n, K: 0, C: off(o.p(ic), i*strideC), Ldc: ldc, Beta: beta})
			}
		} else {
			o.gemm(cu.GemmOp{TransA: transA, TransB: transB, M: m, N: n, K: k, Alpha: alpha, Beta: beta,
				A: o.p(ia), B: o.p(ib), C: o.p(ic), Lda: lda, Ldb: ldb, Ldc: ldc, Batch: batch,
				StrideA: int64(strideA), StrideB: int64(strideB), StrideC: int64(strideC)})
		}
	}
	o.end()
}

// LinearForward implements kernels.Backend: one cuBLASLt call with the bias
// epilogue on the mixed-precision path, GEMM + bias_add otherwise. out and
// in may be bf16 storage; a bf16 out is rounded once from the fp32 sum.
func (b *Backend) LinearForward(out, in, weight, bias []float32, rows, inDim, outDim int) {
	o := b.begin("LinearForward")
	if o == nil || rows == 0 || outDim == 0 {
		return
	}
	iout := o.act(out, rows*outDim, true)
	iin := o.act(in, rows*inDim, false)
	iw := o.arg(weight, outDim*inDim, false)
	ib := o.arg(bias, outDim, false)
	if o.start() {
		done := false
		ct := cu.R32F
		if o.bf(iout) {
			ct = cu.R16BF
		}
		// cuBLASLt's bias epilogue reads the bias vectorised: only with a
		// 16-byte aligned bias (the model's usually are).
		if b.bf16 && bias != nil && inDim > 0 && cu.Alignment(o.p(ib)) >= 16 {
			in16 := o.operand(o.p(iin), rows*inDim)
			w16 := o.toBF16(o.p(iw), outDim*inDim)
			if o.ok {
				switch err := b.dev.linearBias(o.p(iout), in16, w16, o.p(ib), rows, inDim, outDim, cu.R16BF, ct); {
				case err == nil:
					done = true
				case !errors.Is(err, cu.ErrNoAlgo):
					o.failf(err)
				}
			}
		}
		switch {
		case done:
		case o.bf(iout):
			// The sum in fp32 scratch, then bias and one rounding.
			c := o.scratch32(rows * outDim)
			o.gemm(cu.GemmOp{TransB: true, M: rows, N: outDim, K: inDim, Alpha: 1, A: o.p(iin), Lda: inDim, B: o.p(iw), Ldb: inDim, C: c, Ldc: outDim})
			o.elementwise("bias_store", int64(rows)*int64(outDim), o.p(iout), c, o.p(ib), int64(rows), int32(outDim), o.storage(iout))
		default:
			o.gemm(cu.GemmOp{TransB: true, M: rows, N: outDim, K: inDim, Alpha: 1, A: o.p(iin), Lda: inDim, B: o.p(iw), Ldb: inDim, C: o.p(iout), Ldc: outDim})
			if bias != nil {
				o.elementwise("bias_add", int64(rows)*int64(outDim), o.p(iout), o.p(ib), int64(rows), int32(outDim))
			}
		}
	}
	o.end()
}

// LinearBackward implements kernels.Backend; in may be bf16 storage.
func (b *Backend) LinearBackward(din, dweight, dbias, dout, in, weight []float32, rows, inDim, outDim int) {
	o := b.begin("LinearBackward")
	if o == nil || rows == 0 {
		return
	}
	idin := o.arg(din, rows*inDim, true)
	idw := o.arg(dweight, outDim*inDim, true)
	idb := o.arg(dbias, outDim, true)
	idout := o.arg(dout, rows*outDim, false)
	iin := o.act(in, rows*inDim, false)
	iw := o.arg(weight, outDim*inDim, false)
	if o.start() {
		if din != nil {
			o.gemm(cu.GemmOp{M: rows, N: inDim, K: outDim, Alpha: 1, Beta: 1, A: o.p(idout), Lda: outDim, B: o.p(iw), Ldb: inDim, C: o.p(idin), Ldc: inDim})
		}
		o.gemm(cu.GemmOp{TransA: true, M: outDim, N: inDim, K: rows, Alpha: 1, Beta: 1, A: o.p(idout), Lda: outDim, B: o.p(iin), Ldb: inDim, C: o.p(idw), Ldc: inDim})
		o.colsum(o.p(idb), o.p(idout), 0, rows, outDim, 1, outDim, 0)
	}
	o.end()
}

// LayerNormForward implements kernels.Backend; out may be bf16 storage.
func (b *Backend) LayerNormForward(out, mean, rstd, in []float32, rows, cols int) {
	o := b.begin("LayerNormForward")
	if o == nil || rows == 0 {
		return
	}
	iout, imean, irstd := o.act(out, rows*cols, true), o.arg(mean, rows, true), o.arg(rstd, rows, true)
	iin := o.arg(in, rows*cols, false)
	if o.start() {
		o.launch("layernorm_forward", warpPerRowCfg(rows), o.p(iout), o.p(imean), o.p(irstd), o.p(iin), int32(rows), int32(cols), o.storage(iout))
	}
	o.end()
}

// LayerNormBackward implements kernels.Backend; out (forward's) may be
// bf16 storage.
func (b *Backend) LayerNormBackward(din, dout, out, rstd []float32, rows, cols int) {
	o := b.begin("LayerNormBackward")
	if o == nil || rows == 0 {
		return
	}
	idin, idout := o.arg(din, rows*cols, true), o.arg(dout, rows*cols, false)
	iout, irstd := o.act(out, rows*cols, false), o.arg(rstd, rows, false)
	if o.start() {
		o.launch("layernorm_backward", warpPerRowCfg(rows), o.p(idin), o.p(idout), o.p(iout), o.p(irstd), int32(rows), int32(cols), o.storage(-1, -1, iout))
	}
	o.end()
}

// modSpan is the floats a [B, stride] modulation chunk of width D spans.
func modSpan(B, D, stride int) int { return (B-1)*stride + D }

// ModulateForward implements kernels.Backend; out and in may be bf16 storage.
func (b *Backend) ModulateForward(out, in, shift, scale []float32, B, N, D, modStride int) {
	o := b.begin("ModulateForward")
	if o == nil || B*N*D == 0 {
		return
	}
	iout, iin := o.act(out, B*N*D, true), o.act(in, B*N*D, false)
	ish, isc := o.arg(shift, modSpan(B, D, modStride), false), o.arg(scale, modSpan(B, D, modStride), false)
	if o.start() {
		o.elementwise("modulate_forward", int64(B*N*D), o.p(iout), o.p(iin), o.p(ish), o.p(isc), int32(B), int32(N), int32(D), int32(modStride), o.storage(iout, iin))
	}
	o.end()
}

// ModulateBackward implements kernels.Backend; in may be bf16 storage.
func (b *Backend) ModulateBackward(din, dshift, dscale, dout, in, scale []float32, B, N, D, modStride int) {
	o := b.begin("ModulateBackward")
	if o == nil || B*N*D == 0 {
		return
	}
	idin := o.arg(din, B*N*D, true)
	idsh, idsc := o.arg(dshift, modSpan(B, D, modStride), true), o.arg(dscale, modSpan(B, D, modStride), true)
	idout, iin := o.arg(dout, B*N*D, false), o.act(in, B*N*D, false)
	isc := o.arg(scale, modSpan(B, D, modStride), false)
	if o.start() {
		if din != nil {
			o.elementwise("modulate_backward_input", int64(B*N*D), o.p(idin), o.p(idout), o.p(isc), int32(B), int32(N), int32(D), int32(modStride))
		}
		o.colsum(o.p(idsh), o.p(idout), 0, N, D, B, modStride, 0)
		o.colsum(o.p(idsc), o.p(idout), o.p(iin), N, D, B, modStride, o.storage(-1, -1, iin))
	}
	o.end()
}

// GatedResidualForward implements kernels.Backend; y may be bf16 storage.
func (b *Backend) GatedResidualForward(h, y, gate []float32, B, N, D, gateStride int) {
	o := b.begin("GatedResidualForward")
	if o == nil || B*N*D == 0 {
		return
	}
	ih, iy, ig := o.arg(h, B*N*D, true), o.act(y, B*N*D, false), o.arg(gate, modSpan(B, D, gateStride), false)
	if o.start() {
		o.elementwise("gated_residual_forward", int64(B*N*D), o.p(ih), o.p(iy), o.p(ig), int32(B), int32(N), int32(D), int32(gateStride), o.storage(-1, iy))
	}
	o.end()
}

// GatedResidualBackward implements kernels.Backend; y may be bf16 storage.
func (b *Backend) GatedResidualBackward(dy, dgate, dh, y, gate []float32, B, N, D, gateStride int) {
	o := b.begin("GatedResidualBackward")
	if o == nil || B*N*D == 0 {
		return
	}
	idy, idg := o.arg(dy, B*N*D, true), o.arg(dgate, modSpan(B, D, gateStride), true)
	idh, iy, ig := o.arg(dh, B*N*D, false), o.act(y, B*N*D, false), o.arg(gate, modSpan(B, D, gateStride), false)
	if o.start() {
		if dy != nil {
			o.elementwise("gated_residual_backward_input", int64(B*N*D), o.p(idy), o.p(idh), o.p(ig), int32(B), int32(N), int32(D), int32(gateStride))
		}
		o.colsum(o.p(idg), o.p(idh), o.p(iy), N, D, B, gateStride, o.storage(-1, -1, iy))
	}
	o.end()
}

// ResidualForward implements kernels.Backend; out, in1 and in2 may be bf16
// storage.
func (b *Backend) ResidualForward(out, in1, in2 []float32, n int) {
	o := b.begin("ResidualForward")
	if o == nil || n == 0 {
		return
	}
	iout, i1, i2 := o.act(out, n, true), o.act(in1, n, false), o.act(in2, n, false)
	if o.start() {
		o.elementwise("residual_forward", int64(n), o.p(iout), o.p(i1), o.p(i2), int64(n), o.storage(iout, i1, i2))
	}
	o.end()
}

// ResidualBackward implements kernels.Backend.
func (b *Backend) ResidualBackward(din1, din2, dout []float32, n int) {
	o := b.begin("ResidualBackward")
	if o == nil || n == 0 {
		return
	}
	i1, i2, id := o.arg(din1, n, true), o.arg(din2, n, true), o.arg(dout, n, false)
	if o.start() {
		for _, i := range []int{i1, i2} {
			if p := o.p(i); p != 0 {
				o.elementwise("accumulate", int64(n), p, o.p(id), int64(n))
			}
		}
	}
	o.end()
}

// unary runs a forward (out, in: activations, which may be bf16 storage)
// or backward (din, dout: float32 gradients; in: an activation) elementwise
// op; the kernel takes st after n.
func (b *Backend) unary(kernel string, n int, write []float32, reads ...[]float32) {
	o := b.begin(kernel)
	if o == nil || n == 0 {
		return
	}
	backward := len(reads) == 2
	var idx []int
	if backward {
		idx = []int{o.arg(write, n, true), o.arg(reads[0], n, false), o.act(reads[1], n, false)}
	} else {
		idx = []int{o.act(write, n, true), o.act(reads[0], n, false)}
	}
	if o.start() {
		var args []any
		for _, i := range idx {
			args = append(args, o.p(i))
		}
		args = append(args, int64(n), o.storage(idx...))
		o.elementwise(kernel, int64(n), args...)
	}
	o.end()
}

// GELUForward implements kernels.Backend; out and in may be bf16 storage.
func (b *Backend) GELUForward(out, in []float32, n int) { b.unary("gelu_forward", n, out, in) }

// GELUBackward implements kernels.Backend; in may be bf16 storage.
func (b *Backend) GELUBackward(din, dout, in []float32, n int) {
	b.unary("gelu_backward", n, din, dout, in)
}

// SiLUForward implements kernels.Backend; out and in may be bf16 storage.
func (b *Backend) SiLUForward(out, in []float32, n int) { b.unary("silu_forward", n, out, in) }

// SiLUBackward implements kernels.Backend; in may be bf16 storage.
func (b *Backend) SiLUBackward(din, dout, in []float32, n int) {
	b.unary("silu_backward", n, din, dout, in)
}

// attnSpan is the floats a [B, N, row] tensor's heads span.
func attnSpan(d kernels.AttentionDims, n, row int) int {
	if d.B == 0 || n == 0 {
		return 0
	}
	return (d.B*n-1)*row + d.Heads*d.HeadDim
}

// attnScratchBudget bounds the score blocks one attention call keeps at
// once; samples are processed in chunks that fit.
const attnScratchBudget = 2 << 30

// attnChunk is how many samples' [Heads, Nq, Nk] blocks of bytesPerScore
// bytes per score fit in the budget (at least 1, at most B).
func attnChunk(d kernels.AttentionDims, bytesPerScore int) int {
	per := int64(d.Heads) * int64(d.Nq) * int64(d.Nk) * int64(bytesPerScore)
	return int(max(min(attnScratchBudget/max(per, 1), int64(d.B)), 1))
}

// gemmPointers runs g.Batch GEMMs (g.AB set by the caller: the operands
// are already in that type) whose operand addresses addr gives; the
// address arrays are copied to fresh scratch for each call.
func (o *op) gemmPointers(g cu.GemmOp, addr func(i int) (a, b, c cu.DevicePtr)) {
	if !o.ok || g.Batch == 0 || g.M == 0 || g.N == 0 {
		return
	}
	host := make([]uint64, 3*g.Batch)
	for i := 0; i < g.Batch; i++ {
		a, b, c := addr(i)
		host[i], host[g.Batch+i], host[2*g.Batch+i] = uint64(a), uint64(b), uint64(c)
	}
	p, err := o.scratchBytes(8 * len(host))
	if err == nil {
		err = o.b.dev.copyHtoD(p, unsafe.Pointer(&host[0]), 8*len(host))
	}
	if err == nil {
		err = o.b.dev.gemmPointers(g, p)
	}
	if err != nil {
		o.failf(err)
	}
}

// operands returns the GEMM operands of tensors p (n values each): the
// tensors themselves on the fp32 path, bf16 ones on the mixed-precision
// path (see operand), with their element size and type.
func (o *op) operands(p []cu.DevicePtr, n []int) ([]cu.DevicePtr, int, cu.DataType) {
	if !o.b.bf16 {
		return p, 4, cu.R32F
	}
	out := make([]cu.DevicePtr, len(p))
	for i := range p {
		if p[i] != 0 {
			out[i] = o.operand(p[i], n[i])
		}
	}
	return out, 2, cu.R16BF
}

// elemSize is the bytes per value of the tensor at p: 2 in bf16 storage.
func (o *op) elemSize(p cu.DevicePtr) int {
	if o.inBF16(p) {
		return 2
	}
	return 4
}

// at offsets a device pointer by n elements of elem bytes.
func at(p cu.DevicePtr, n, elem int) cu.DevicePtr {
	return p + cu.DevicePtr(n*elem)
}

// AttentionForward implements kernels.Backend: the fused kernel
// (flash_attention.cu) where it applies (see flashFor), else the cuBLAS
// path of gemmAttentionForward. out, q, k and v may be bf16 storage.
func (b *Backend) AttentionForward(out, lse, q, k, v, mask []float32, d kernels.AttentionDims) {
	o := b.begin("AttentionForward")
	if o == nil || d.B*d.Heads*d.Nq == 0 {
		return
	}
	qs, ks, vs, ospan := attnSpan(d, d.Nq, d.QRow), attnSpan(d, d.Nk, d.KRow), attnSpan(d, d.Nk, d.VRow), attnSpan(d, d.Nq, d.ORow)
	iout, ilse := o.act(out, ospan, true), o.arg(lse, d.B*d.Heads*d.Nq, true)
	iq, ik, iv := o.act(q, qs, false), o.act(k, ks, false), o.act(v, vs, false)
	im := o.arg(mask, d.B*d.Nk, false)
	if o.start() {
		if hdp := b.flashFor(d); hdp != 0 {
			kind := b.flashKind(flashForward)
			o.launchOptIn(kind.kernel(hdp), flashCfg(kind, d, hdp), append([]any{o.p(iout), o.p(ilse), o.p(iq), o.p(ik), o.p(iv), o.p(im)}, o.flashDims(kind, d, o.storage(iout, iq, ik, iv))...)...)
		} else {
			o.gemmAttentionForward(o.p(iout), o.p(ilse), o.p(iq), o.p(ik), o.p(iv), o.p(im), []int{qs, ks, vs}, d)
		}
	}
	o.end()
}

// AttentionBackward implements kernels.Backend, recomputing P from Q, K and
// the saved log-sum-exp (no [Nq, Nk] tensor is kept between passes): the
// fused kernels where they apply (see flashFor), else the cuBLAS path of
// gemmAttentionBackward. q, k, v and out may be bf16 storage.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, mask, out, lse []float32, d kernels.AttentionDims) {
	o := b.begin("AttentionBackward")
	if o == nil || d.B*d.Heads*d.Nq == 0 {
		return
	}
	qs, ks, vs, ospan := attnSpan(d, d.Nq, d.QRow), attnSpan(d, d.Nk, d.KRow), attnSpan(d, d.Nk, d.VRow), attnSpan(d, d.Nq, d.ORow)
	idq, idk, idv := o.arg(dq, qs, true), o.arg(dk, ks, true), o.arg(dv, vs, true)
	idout, iout := o.arg(dout, ospan, false), o.act(out, ospan, false)
	iq, ik, iv := o.act(q, qs, false), o.act(k, ks, false), o.act(v, vs, false)
	im, ilse := o.arg(mask, d.B*d.Nk, false), o.arg(lse, d.B*d.Heads*d.Nq, false)
	if o.start() {
		p := attnPtrs{dq: o.p(idq), dk: o.p(idk), dv: o.p(idv), dout: o.p(idout), out: o.p(iout), q: o.p(iq), k: o.p(ik), v: o.p(iv), mask: o.p(im), lse: o.p(ilse),
			st: o.storage(iout, iq, ik, iv)}
		if hdp := b.flashFor(d); hdp != 0 {
			o.flashAttentionBackward(p, d, hdp)
		} else {
			o.gemmAttentionBackward(p, []int{qs, ks, vs, ospan}, d)
		}
	}
	o.end()
}

// flashKind is the fused attention kernel this backend runs for k (one of
// flashForward, flashDKDV, flashDQ): on tensor cores for bf16 on sm_80 and
// later, else the FMA kernel.
func (b *Backend) flashKind(k flashKind) flashKind {
	if b.bf16 && b.tensorCores {
		return k + flashForwardTC
	}
	return k
}

// rowdotStorage is attn_rowdot's st (bit 2 O) from an attnPtrs.st.
func rowdotStorage(st int32) int32 { return (st & 1) << 2 }

// flashFor returns the padded head dim of the fused kernels serving d, or 0
// when the cuBLAS path does: with Options.Attention "gemm"
// (FMTRAIN_CUDA_ATTENTION=gemm), for head dims above 128 (flashHeadDim),
// and on a device whose blocks cannot have the tiles' shared memory.
func (b *Backend) flashFor(d kernels.AttentionDims) int {
	if b.attention == attnGEMM {
		return 0
	}
	hdp := flashHeadDim(d.HeadDim)
	if hdp == 0 {
		return 0
	}
	for _, k := range flashKinds {
		if flashShared(k, hdp) > b.sharedLimit() {
			return 0
		}
	}
	return hdp
}

// flashDims are kind's trailing arguments (heads … st); st marks the
// tensors stored as bf16 (bit 0 O, 1 Q, 2 K, 3 V). The tensor-core
// kernels, always bf16, take no bf16 argument.
func (o *op) flashDims(kind flashKind, d kernels.AttentionDims, st int32) []any {
	dims := []any{int32(d.Heads), int32(d.Nq), int32(d.Nk), int32(d.HeadDim), int32(d.QRow), int32(d.KRow), int32(d.VRow), int32(d.ORow), d.Scale}
	if !kind.tensorCores() {
		bf16 := int32(0)
		if o.b.bf16 {
			bf16 = 1
		}
		dims = append(dims, bf16)
	}
	return append(dims, st)
}

// attnPtrs are the device addresses of an attention backward's arguments
// (0 for a nil gradient or mask).
type attnPtrs struct {
	dq, dk, dv, dout, out, q, k, v, mask, lse cu.DevicePtr
	st                                        int32 // bf16 storage: bit 0 out, 1 q, 2 k, 3 v
}

// flashAttentionBackward: D = rowsum(dO∘O) in fp32 (attn_rowdot), then
// the deterministic two-kernel backward: dK and dV per key tile, dQ per
// query tile, each skipped when its gradients are not wanted.
func (o *op) flashAttentionBackward(p attnPtrs, d kernels.AttentionDims, hdp int) {
	if d.Nk == 0 || p.dq == 0 && p.dk == 0 && p.dv == 0 {
		return // nothing to add
	}
	rows := d.B * d.Heads * d.Nq
	D := o.scratch32(rows)
	o.elementwise("attn_rowdot", int64(rows), D, p.dout, p.out, int32(d.B), int32(d.Heads), int32(d.Nq), int32(d.HeadDim), int32(d.ORow), rowdotStorage(p.st))
	if p.dk != 0 || p.dv != 0 {
		kind := o.b.flashKind(flashDKDV)
		o.launchOptIn(kind.kernel(hdp), flashCfg(kind, d, hdp), append([]any{p.dk, p.dv, p.dout, p.q, p.k, p.v, p.mask, p.lse, D}, o.flashDims(kind, d, p.st&^1)...)...)
	}
	if p.dq != 0 {
		kind := o.b.flashKind(flashDQ)
		o.launchOptIn(kind.kernel(hdp), flashCfg(kind, d, hdp), append([]any{p.dq, p.dout, p.q, p.k, p.v, p.mask, p.lse, D}, o.flashDims(kind, d, p.st&^1)...)...)
	}
}

// gemmAttentionForward: for each chunk of samples, S = scale·QKᵀ for every
// (sample, head) in one batched GEMM, a fused masked softmax that also
// writes the log-sum-exp, and O = PV in a second batched GEMM. The chunk's
// score blocks are the only intermediate. spans are q's, k's and v's floats.
func (o *op) gemmAttentionForward(out, lse, q, k, v, mask cu.DevicePtr, spans []int, d kernels.AttentionDims) {
	b := o.b
	ops, elem, ab := o.operands([]cu.DevicePtr{q, k, v}, spans)
	Q, K, V := ops[0], ops[1], ops[2]
	hd, H, block, rps := d.HeadDim, d.Heads, d.Nq*d.Nk, d.Heads*d.Nq
	oelem, ct := o.elemSize(out), cu.R32F
	if oelem == 2 {
		ct = cu.R16BF
	}
	chunk := attnChunk(d, 4+2)
	S := o.scratch32(chunk * H * block)
	P := S
	if b.bf16 {
		P, _ = o.scratchBytesOK(chunk * H * block * 2)
	}
	for s0 := 0; s0 < d.B && o.ok; s0 += chunk {
		n := min(chunk, d.B-s0)
		o.gemmPointers(cu.GemmOp{TransB: true, M: d.Nq, N: d.Nk, K: hd, Alpha: d.Scale, Lda: d.QRow, Ldb: d.KRow, Ldc: d.Nk, Batch: n * H, AB: ab},
			func(i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
				s, h := s0+i/H, i%H
				return at(Q, s*d.Nq*d.QRow+h*hd, elem), at(K, s*d.Nk*d.KRow+h*hd, elem), at(S, i*block, 4)
			})
		o.launch("attn_softmax_forward", warpPerRowCfg(n*rps), S, off(lse, s0*rps), off(mask, s0*d.Nk), int32(n*rps), int32(d.Nk), int32(rps))
		if b.bf16 {
			o.elementwise("cast_bf16", int64(n*H*block), P, S, int64(n*H*block))
		}
		o.gemmPointers(cu.GemmOp{M: d.Nq, N: hd, K: d.Nk, Alpha: 1, Lda: d.Nk, Ldb: d.VRow, Ldc: d.ORow, Batch: n * H, AB: ab, CT: ct},
			func(i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
				s, h := s0+i/H, i%H
				return at(P, i*block, elem), at(V, s*d.Nk*d.VRow+h*hd, elem), at(out, s*d.Nq*d.ORow+h*hd, oelem)
			})
	}
}

// gemmAttentionBackward: per chunk of samples, P recomputed by a batched
// GEMM and attn_softmax_recompute, then four batched GEMMs (dV, dP, dQ,
// dK) and the softmax backward between them. spans are q's, k's, v's and
// dout's floats.
func (o *op) gemmAttentionBackward(p attnPtrs, spans []int, d kernels.AttentionDims) {
	b := o.b
	ops, elem, ab := o.operands([]cu.DevicePtr{p.q, p.k, p.v, p.dout}, spans)
	Q, K, V, DO := ops[0], ops[1], ops[2], ops[3]
	hd, H, block, rps := d.HeadDim, d.Heads, d.Nq*d.Nk, d.Heads*d.Nq
	chunk := attnChunk(d, 4+4+2+2)
	P, dP, D := o.scratch32(chunk*H*block), o.scratch32(chunk*H*block), o.scratch32(chunk*rps)
	P16, dS16 := P, dP
	if b.bf16 {
		P16, _ = o.scratchBytesOK(chunk * H * block * 2)
		dS16, _ = o.scratchBytesOK(chunk * H * block * 2)
	}
	for s0 := 0; s0 < d.B && o.ok; s0 += chunk {
		n := min(chunk, d.B-s0)
		qkv := func(base cu.DevicePtr, nrow, row, elem int) func(s, h int) cu.DevicePtr {
			return func(s, h int) cu.DevicePtr { return at(base, s*nrow*row+h*hd, elem) }
		}
		q16, k16, v16, do16 := qkv(Q, d.Nq, d.QRow, elem), qkv(K, d.Nk, d.KRow, elem), qkv(V, d.Nk, d.VRow, elem), qkv(DO, d.Nq, d.ORow, elem)
		batched := func(g cu.GemmOp, f func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr)) {
			g.Batch, g.AB = n*H, ab
			o.gemmPointers(g, func(i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) { return f(s0+i/H, i%H, i) })
		}
		batched(cu.GemmOp{TransB: true, M: d.Nq, N: d.Nk, K: hd, Alpha: d.Scale, Lda: d.QRow, Ldb: d.KRow, Ldc: d.Nk},
			func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
				return q16(s, h), k16(s, h), at(P, i*block, 4)
			})
		o.elementwise("attn_softmax_recompute", int64(n*H*block), P, off(p.lse, s0*rps), off(p.mask, s0*d.Nk), int32(n*rps), int32(d.Nk), int32(rps))
		if b.bf16 {
			o.elementwise("cast_bf16", int64(n*H*block), P16, P, int64(n*H*block))
		}
		if p.dv != 0 {
			batched(cu.GemmOp{TransA: true, M: d.Nk, N: hd, K: d.Nq, Alpha: 1, Beta: 1, Lda: d.Nk, Ldb: d.ORow, Ldc: d.VRow},
				func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
					return at(P16, i*block, elem), do16(s, h), off(p.dv, s*d.Nk*d.VRow+h*hd)
				})
		}
		batched(cu.GemmOp{TransB: true, M: d.Nq, N: d.Nk, K: hd, Alpha: 1, Lda: d.ORow, Ldb: d.VRow, Ldc: d.Nk},
			func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
				return do16(s, h), v16(s, h), at(dP, i*block, 4)
			})
		o.elementwise("attn_rowdot", int64(n*rps), D, off(p.dout, s0*d.Nq*d.ORow), at(p.out, s0*d.Nq*d.ORow, o.elemSize(p.out)), int32(n), int32(H), int32(d.Nq), int32(hd), int32(d.ORow), rowdotStorage(p.st))
		o.elementwise("attn_softmax_backward", int64(n*H*block), dP, P, D, int32(n*rps), int32(d.Nk), d.Scale)
		if b.bf16 {
			o.elementwise("cast_bf16", int64(n*H*block), dS16, dP, int64(n*H*block))
		}
		if p.dq != 0 {
			batched(cu.GemmOp{M: d.Nq, N: hd, K: d.Nk, Alpha: 1, Beta: 1, Lda: d.Nk, Ldb: d.KRow, Ldc: d.QRow},
				func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
					return at(dS16, i*block, elem), k16(s, h), off(p.dq, s*d.Nq*d.QRow+h*hd)
				})
		}
		if p.dk != 0 {
			batched(cu.GemmOp{TransA: true, M: d.Nk, N: hd, K: d.Nq, Alpha: 1, Beta: 1, Lda: d.Nk, Ldb: d.QRow, Ldc: d.KRow},
				func(s, h, i int) (cu.DevicePtr, cu.DevicePtr, cu.DevicePtr) {
					return at(dS16, i*block, elem), q16(s, h), off(p.dk, s*d.Nk*d.KRow+h*hd)
				})
		}
	}
}

// patch runs one of the four patch kernels; write is the output, read the input.
func (b *Backend) patch(kernel string, write []float32, writeLen int, read []float32, readLen int, d kernels.PatchDims) {
	o := b.begin(kernel)
	if o == nil {
		return
	}
	if err := d.Validate(); err != nil {
		b.fail(err)
		return
	}
	iw, ir := o.arg(write, writeLen, true), o.arg(read, readLen, false)
	if o.start() {
		total := int64(d.B) * int64(d.Tokens()) * int64(d.PatchLen())
		o.elementwise(kernel, total, o.p(iw), o.p(ir), int32(d.B), int32(d.C), int32(d.F), int32(d.H), int32(d.W), int32(d.P), int32(d.PT))
	}
	o.end()
}

// PatchifyForward implements kernels.Backend.
func (b *Backend) PatchifyForward(out, x []float32, d kernels.PatchDims) {
	n := d.B * d.C * d.F * d.H * d.W
	b.patch("patchify_forward", out, n, x, n, d)
}

// PatchifyBackward implements kernels.Backend.
func (b *Backend) PatchifyBackward(dx, dout []float32, d kernels.PatchDims) {
	n := d.B * d.C * d.F * d.H * d.W
	b.patch("patchify_backward", dx, n, dout, n, d)
}

// UnpatchifyForward implements kernels.Backend.
func (b *Backend) UnpatchifyForward(out, o []float32, d kernels.PatchDims) {
	n := d.B * d.C * d.F * d.H * d.W
	b.patch("unpatchify_forward", out, n, o, n, d)
}

// UnpatchifyBackward implements kernels.Backend.
func (b *Backend) UnpatchifyBackward(do, dout []float32, d kernels.PatchDims) {
	n := d.B * d.C * d.F * d.H * d.W
	b.patch("unpatchify_backward", do, n, dout, n, d)
}

// MSEForward implements kernels.Backend. It synchronises (the result is a
// host value): per-block partial sums in float64, added on the host in
// block order so the loss is reproducible. NaN after a failure.
func (b *Backend) MSEForward(pred, target []float32, n int) float64 {
	o := b.begin("MSEForward")
	if o == nil || n == 0 {
		return math.NaN()
	}
	ip, it := o.arg(pred, n, false), o.arg(target, n, false)
	result := math.NaN()
	if o.start() {
		cfg := mseCfg(int64(n))
		partial := o.scratch32(2 * cfg.grid.X) // doubles
		o.launch("mse_partial", cfg, partial, o.p(ip), o.p(it), int64(n))
		if o.ok {
			host := make([]float64, cfg.grid.X)
			if err := b.dev.copyDtoH(unsafe.Pointer(&host[0]), partial, 8*len(host)); err != nil {
				o.failf(err)
			} else {
				var s float64
				for _, v := range host {
					s += v
				}
				result = s / float64(n)
			}
		}
	}
	o.end()
	if b.err != nil {
		return math.NaN()
	}
	return result
}

// MSEBackward implements kernels.Backend.
func (b *Backend) MSEBackward(dpred, pred, target []float32, n int, scale float32) {
	o := b.begin("MSEBackward")
	if o == nil || n == 0 {
		return
	}
	id, ip, it := o.arg(dpred, n, true), o.arg(pred, n, false), o.arg(target, n, false)
	if o.start() {
		f := float32(2 * float64(scale) / float64(n))
		o.elementwise("mse_backward", int64(n), o.p(id), o.p(ip), o.p(it), int64(n), f)
	}
	o.end()
}

// AdamW applies one torch.optim.AdamW step (the same arithmetic as
// optim.AdamW.Update; step is t, counted from 1) to params in place from
// grads, updating the moments m and v: one fused kernel over the flat
// buffers, with params, grads, m and v normally from Alloc.
func (b *Backend) AdamW(params, grads, m, v []float32, lr, beta1, beta2, eps, weightDecay float64, step int64) error {
	n := len(params)
	if len(grads) != n || len(m) != n || len(v) != n {
		return fmt.Errorf("kernels/cuda: AdamW: params %d, grads %d, m %d, v %d floats differ", n, len(grads), len(m), len(v))
	}
	if step < 1 {
		return fmt.Errorf("kernels/cuda: AdamW: step %d, want ≥ 1", step)
	}
	o := b.begin("AdamW")
	if o == nil {
		return b.err
	}
	ip, im, iv := o.arg(params, n, true), o.arg(m, n, true), o.arg(v, n, true)
	ig := o.arg(grads, n, false)
	if o.start() {
		t := float64(step)
		o.elementwise("adamw", int64(n), o.p(ip), o.p(im), o.p(iv), o.p(ig), int64(n),
			float32(1-lr*weightDecay), float32(beta1), float32(1-beta1), float32(beta2), float32(1-beta2),
			float32(math.Sqrt(1-math.Pow(beta2, t))), float32(-(lr / (1 - math.Pow(beta1, t)))), float32(eps))
	}
	o.end()
	return b.err
}

// EMAUpdate implements optim.DeviceEMA: shadow = decay·shadow +
// oneMinus·params on the device, in optim.EMA.Update's arithmetic (decay 0
// copies), with shadow and params normally from Alloc.
func (b *Backend) EMAUpdate(shadow, params []float32, decay, oneMinus float32) error {
	n := len(params)
	if len(shadow) != n {
		return fmt.Errorf("kernels/cuda: EMAUpdate: shadow %d, params %d floats differ", len(shadow), n)
	}
	o := b.begin("EMAUpdate")
	if o == nil {
		return b.err
	}
	is, ip := o.arg(shadow, n, true), o.arg(params, n, false)
	if o.start() {
		o.elementwise("ema_update", int64(n), o.p(is), o.p(ip), int64(n), decay, oneMinus)
	}
	o.end()
	return b.err
}

// Zero sets buf to zeros on the device: use it rather than clear() for
// buffers from Alloc, which a host write would migrate to the host.
func (b *Backend) Zero(buf []float32) {
	o := b.begin("Zero")
	if o == nil || len(buf) == 0 {
		return
	}
	i := o.arg(buf, len(buf), true)
	if o.start() {
		if err := b.dev.zero(o.p(i), len(buf)); err != nil {
			o.failf(err)
		}
	}
	o.end()
}

// Scale multiplies buf by s on the device (gradient clipping).
func (b *Backend) Scale(buf []float32, s float32) {
	o := b.begin("Scale")
	if o == nil || len(buf) == 0 {
		return
	}
	i := o.arg(buf, len(buf), true)
	if o.start() {
		o.elementwise("scale_vector", int64(len(buf)), o.p(i), s, int64(len(buf)))
	}
	o.end()
}

// SumSquares returns Σ buf² accumulated in float64 (the global gradient
// norm's square) without moving buf to the host. It synchronises.
func (b *Backend) SumSquares(buf []float32) float64 {
	if len(buf) == 0 {
		return 0
	}
	return b.MSEForward(buf, nil, len(buf)) * float64(len(buf))
}

// String describes the backend for logs.
func (b *Backend) String() string {
	i := b.dev.info()
	return fmt.Sprintf("%s on %s (sm_%d%d, %d SMs, %.0f GiB)", b.Name(), strings.TrimSpace(i.Name), i.ComputeMajor, i.ComputeMinor, i.Multiprocessors, float64(i.TotalMemory)/(1<<30))
}

// DevicePointer returns the device address of s when it lies in memory
// from Alloc (so a library such as NCCL can use it in place); false for
// ordinary Go memory.
func (b *Backend) DevicePointer(s []float32) (cu.DevicePtr, bool) {
	lo, hi := sliceRange(s, len(s))
	if lo == hi || !b.mm.contains(lo, hi) {
		return 0, false
	}
	return cu.DevicePtr(lo), true
}
