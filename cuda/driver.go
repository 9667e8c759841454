package cuda

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"
)

// Error is a failed call into a CUDA library. Code is the library's status
// value (CUresult, cublasStatus_t, nvrtcResult, ncclResult_t).
type Error struct {
	Call string // the C function, e.g. "cuMemAlloc_v2"
	Code int
	Name string // the library's name for the code, when it has one
}

func (e *Error) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	}
	return fmt.Sprintf("cuda: %s: status %d", e.Call, e.Code)
}

// Driver API types, as the C headers define them.
type (
	// DevicePtr is a CUdeviceptr (a device or managed address).
	DevicePtr uintptr
	// Device is a CUdevice ordinal handle.
	Device int32
)

// Driver constants (pinned in prototypes.h).
const (
	cudaSuccess                       = 0
	errNoDevice                       = 100
	attrMultiprocessorCount           = 16
	attrComputeCapabilityMajor        = 75
	attrComputeCapabilityMinor        = 76
	attrMaxSharedMemoryPerBlockOptin  = 97
	attrConcurrentManagedAccess       = 89
	funcAttrMaxDynamicSharedSizeBytes = 8
	memAttachGlobal                   = 1
	streamNonBlocking                 = 1
	eventDefault                      = 0
)

// driverFuncs are the bound libcuda.so.1 entry points (see prototypes.h).
type driverFuncs struct {
	cuInit                       func(flags uint32) int32
	cuDriverGetVersion           func(v *int32) int32
	cuGetErrorName               func(code int32, s **byte) int32
	cuGetErrorString             func(code int32, s **byte) int32
	cuDeviceGetCount             func(n *int32) int32
	cuDeviceGet                  func(d *Device, ordinal int32) int32
	cuDeviceGetByPCIBusId        func(d *Device, busID string) int32
	cuDeviceGetName              func(name *byte, n int32, d Device) int32
	cuDeviceGetAttribute         func(v *int32, attr int32, d Device) int32
	cuDeviceTotalMem_v2          func(bytes *uintptr, d Device) int32
	cuDevicePrimaryCtxRetain     func(ctx *uintptr, d Device) int32
	cuDevicePrimaryCtxRelease_v2 func(d Device) int32
	cuCtxSetCurrent              func(ctx uintptr) int32
	cuCtxSynchronize             func() int32
	cuMemGetInfo_v2              func(free, total *uintptr) int32
	cuMemAlloc_v2                func(p *DevicePtr, bytes uintptr) int32
	cuMemAllocManaged            func(p *DevicePtr, bytes uintptr, flags uint32) int32
	cuMemFree_v2                 func(p DevicePtr) int32
	cuMemcpyHtoD_v2              func(dst DevicePtr, src unsafe.Pointer, bytes uintptr) int32
	cuMemcpyDtoH_v2              func(dst unsafe.Pointer, src DevicePtr, bytes uintptr) int32
	cuMemcpyHtoDAsync_v2         func(dst DevicePtr, src unsafe.Pointer, bytes uintptr, s uintptr) int32
	cuMemcpyDtoHAsync_v2         func(dst unsafe.Pointer, src DevicePtr, bytes uintptr, s uintptr) int32
	cuMemcpyDtoDAsync_v2         func(dst, src DevicePtr, bytes uintptr, s uintptr) int32
	cuMemsetD32Async             func(dst DevicePtr, v uint32, n uintptr, s uintptr) int32
	cuStreamCreate               func(s *uintptr, flags uint32) int32
	cuStreamDestroy_v2           func(s uintptr) int32
	cuStreamSynchronize          func(s uintptr) int32
	cuEventCreate                func(e *uintptr, flags uint32) int32
	cuEventDestroy_v2            func(e uintptr) int32
	cuEventRecord                func(e, s uintptr) int32
	cuEventSynchronize           func(e uintptr) int32
	cuEventElapsedTime           func(ms *float32, start, end uintptr) int32
	cuModuleLoadData             func(m *uintptr, image unsafe.Pointer) int32
	cuModuleUnload               func(m uintptr) int32
	cuModuleGetFunction          func(f *uintptr, m uintptr, name string) int32
	cuFuncSetAttribute           func(f uintptr, attr int32, v int32) int32
	cuLaunchKernel               func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) int32
}

func (f *driverFuncs) symbols() []symbol {
	return []symbol{
		{"cuInit", &f.cuInit},
		{"cuDriverGetVersion", &f.cuDriverGetVersion},
		{"cuGetErrorName", &f.cuGetErrorName},
		{"cuGetErrorString", &f.cuGetErrorString},
		{"cuDeviceGetCount", &f.cuDeviceGetCount},
		{"cuDeviceGet", &f.cuDeviceGet},
		{"cuDeviceGetByPCIBusId", &f.cuDeviceGetByPCIBusId},
		{"cuDeviceGetName", &f.cuDeviceGetName},
		{"cuDeviceGetAttribute", &f.cuDeviceGetAttribute},
		{"cuDeviceTotalMem_v2", &f.cuDeviceTotalMem_v2},
		{"cuDevicePrimaryCtxRetain", &f.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &f.cuDevicePrimaryCtxRelease_v2},
		{"cuCtxSetCurrent", &f.cuCtxSetCurrent},
		{"cuCtxSynchronize", &f.cuCtxSynchronize},
		{"cuMemGetInfo_v2", &f.cuMemGetInfo_v2},
		{"cuMemAlloc_v2", &f.cuMemAlloc_v2},
		{"cuMemAllocManaged", &f.cuMemAllocManaged},
		{"cuMemFree_v2", &f.cuMemFree_v2},
		{"cuMemcpyHtoD_v2", &f.cuMemcpyHtoD_v2},
		{"cuMemcpyDtoH_v2", &f.cuMemcpyDtoH_v2},
		{"cuMemcpyHtoDAsync_v2", &f.cuMemcpyHtoDAsync_v2},
		{"cuMemcpyDtoHAsync_v2", &f.cuMemcpyDtoHAsync_v2},
		{"cuMemcpyDtoDAsync_v2", &f.cuMemcpyDtoDAsync_v2},
		{"cuMemsetD32Async", &f.cuMemsetD32Async},
		{"cuStreamCreate", &f.cuStreamCreate},
		{"cuStreamDestroy_v2", &f.cuStreamDestroy_v2},
		{"cuStreamSynchronize", &f.cuStreamSynchronize},
		{"cuEventCreate", &f.cuEventCreate},
		{"cuEventDestroy_v2", &f.cuEventDestroy_v2},
		{"cuEventRecord", &f.cuEventRecord},
		{"cuEventSynchronize", &f.cuEventSynchronize},
		{"cuEventElapsedTime", &f.cuEventElapsedTime},
		{"cuModuleLoadData", &f.cuModuleLoadData},
		{"cuModuleUnload", &f.cuModuleUnload},
		{"cuModuleGetFunction", &f.cuModuleGetFunction},
		{"cuFuncSetAttribute", &f.cuFuncSetAttribute},
		{"cuLaunchKernel", &f.cuLaunchKernel},
	}
}

// Driver is the loaded and initialised CUDA driver (one per process).
type Driver struct {
	f       driverFuncs
	Path    string // the library file that was loaded
	Version int    // e.g. 13000 for CUDA 13.0
}

var (
	driverOnce sync.Once
	driverVal  *Driver
	driverErr  error
)

// LoadDriver loads libcuda.so.1 and calls cuInit once per process. On a host
// without the driver the error wraps ErrLibraryNotFound; on a host with the
// driver but no usable GPU it is the *Error of cuInit (CUDA_ERROR_NO_DEVICE…).
func LoadDriver() (*Driver, error) {
	driverOnce.Do(func() {
		d := &Driver{}
		path, err := loadAndBind(specDriver, d.f.symbols())
		if err != nil {
			driverErr = err
			return
		}
		d.Path = path
		if err := d.check("cuInit", d.f.cuInit(0)); err != nil {
			if ce := err.(*Error); ce.Code == errNoDevice {
				err = fmt.Errorf("cuda: the driver sees no GPU (CUDA_VISIBLE_DEVICES=%q): %w", os.Getenv("CUDA_VISIBLE_DEVICES"), err)
			}
			driverErr = err
			return
		}
		var v int32
		if err := d.check("cuDriverGetVersion", d.f.cuDriverGetVersion(&v)); err != nil {
			driverErr = err
			return
		}
		d.Version = int(v)
		driverVal = d
	})
	return driverVal, driverErr
}

// check turns a CUresult into an *Error (nil for CUDA_SUCCESS).
func (d *Driver) check(call string, r int32) error {
	if r == cudaSuccess {
		return nil
	}
	e := &Error{Call: call, Code: int(r)}
	var s *byte
	if d.f.cuGetErrorName != nil && d.f.cuGetErrorName(r, &s) == cudaSuccess {
		e.Name = goString(s)
	}
	return e
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// DeviceCount returns the number of CUDA devices visible to this process.
func (d *Driver) DeviceCount() (int, error) {
	var n int32
	err := d.check("cuDeviceGetCount", d.f.cuDeviceGetCount(&n))
	return int(n), err
}

// Device returns the device with the given ordinal.
func (d *Driver) Device(ordinal int) (Device, error) {
	var dev Device
	err := d.check("cuDeviceGet", d.f.cuDeviceGet(&dev, int32(ordinal)))
	return dev, err
}

// DeviceByPCIBusID returns the device at a PCI bus id ("0000:18:00.0").
func (d *Driver) DeviceByPCIBusID(id string) (Device, error) {
	var dev Device
	err := d.check("cuDeviceGetByPCIBusId", d.f.cuDeviceGetByPCIBusId(&dev, id))
	return dev, err
}

// DeviceInfo is what the backend needs to know about a device.
type DeviceInfo struct {
	Name                       string
	ComputeMajor, ComputeMinor int
	Multiprocessors            int
	MaxSharedPerBlockOptin     int
	ConcurrentManagedAccess    bool
	TotalMemory                uint64
}

// Info reads the device's name, compute capability and limits.
func (d *Driver) Info(dev Device) (DeviceInfo, error) {
	var info DeviceInfo
	name := make([]byte, 256)
	if err := d.check("cuDeviceGetName", d.f.cuDeviceGetName(&name[0], int32(len(name)), dev)); err != nil {
		return info, err
	}
	info.Name = goString(&name[0])
	attrs := []struct {
		attr int32
		dst  *int
	}{
		{attrComputeCapabilityMajor, &info.ComputeMajor},
		{attrComputeCapabilityMinor, &info.ComputeMinor},
		{attrMultiprocessorCount, &info.Multiprocessors},
		{attrMaxSharedMemoryPerBlockOptin, &info.MaxSharedPerBlockOptin},
	}
	for _, a := range attrs {
		var v int32
		if err := d.check("cuDeviceGetAttribute", d.f.cuDeviceGetAttribute(&v, a.attr, dev)); err != nil {
			return info, fmt.Errorf("attribute %d: %w", a.attr, err)
		}
		*a.dst = int(v)
	}
	var cma int32
	if err := d.check("cuDeviceGetAttribute", d.f.cuDeviceGetAttribute(&cma, attrConcurrentManagedAccess, dev)); err != nil {
		return info, err
	}
	info.ConcurrentManagedAccess = cma != 0
	var total uintptr
	if err := d.check("cuDeviceTotalMem_v2", d.f.cuDeviceTotalMem_v2(&total, dev)); err != nil {
		return info, err
	}
	info.TotalMemory = uint64(total)
	return info, nil
}

// Context is a device's primary context, retained for this process.
type Context struct {
	d   *Driver
	dev Device
	ctx uintptr
}

// Retain retains dev's primary context (shared with any other user of the
// device in this process, as the CUDA runtime does).
func (d *Driver) Retain(dev Device) (*Context, error) {
	c := &Context{d: d, dev: dev}
	if err := d.check("cuDevicePrimaryCtxRetain", d.f.cuDevicePrimaryCtxRetain(&c.ctx, dev)); err != nil {
		return nil, err
	}
	return c, nil
}

// Bind locks the calling goroutine to its OS thread and makes the context
// current there; call the returned function (Unbind) when done. Every
// device call must happen between the two.
func (c *Context) Bind() (unbind func(), err error) {
	runtime.LockOSThread()
	if err := c.d.check("cuCtxSetCurrent", c.d.f.cuCtxSetCurrent(c.ctx)); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

// Release releases the primary context.
func (c *Context) Release() error {
	return c.d.check("cuDevicePrimaryCtxRelease_v2", c.d.f.cuDevicePrimaryCtxRelease_v2(c.dev))
}

// Driver returns the driver the context belongs to.
func (c *Context) Driver() *Driver { return c.d }

// Synchronize waits for all work in the context.
func (c *Context) Synchronize() error {
	return c.d.check("cuCtxSynchronize", c.d.f.cuCtxSynchronize())
}

// MemInfo returns the device's free and total memory in bytes.
func (c *Context) MemInfo() (free, total uint64, err error) {
	var f, t uintptr
	err = c.d.check("cuMemGetInfo_v2", c.d.f.cuMemGetInfo_v2(&f, &t))
	return uint64(f), uint64(t), err
}

// MemAlloc allocates device memory.
func (c *Context) MemAlloc(bytes int) (DevicePtr, error) {
	var p DevicePtr
	err := c.d.check("cuMemAlloc_v2", c.d.f.cuMemAlloc_v2(&p, uintptr(bytes)))
	return p, err
}

// MemAllocManaged allocates managed (unified) memory, addressable from the
// host and every device (CU_MEM_ATTACH_GLOBAL).
func (c *Context) MemAllocManaged(bytes int) (DevicePtr, error) {
	var p DevicePtr
	err := c.d.check("cuMemAllocManaged", c.d.f.cuMemAllocManaged(&p, uintptr(bytes), memAttachGlobal))
	return p, err
}

// MemFree frees memory from MemAlloc or MemAllocManaged.
func (c *Context) MemFree(p DevicePtr) error {
	return c.d.check("cuMemFree_v2", c.d.f.cuMemFree_v2(p))
}

// CopyHtoD copies bytes from host memory (synchronously).
func (c *Context) CopyHtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	return c.d.check("cuMemcpyHtoD_v2", c.d.f.cuMemcpyHtoD_v2(dst, src, uintptr(bytes)))
}

// CopyDtoH copies bytes to host memory (synchronously).
func (c *Context) CopyDtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	return c.d.check("cuMemcpyDtoH_v2", c.d.f.cuMemcpyDtoH_v2(dst, src, uintptr(bytes)))
}

// Stream is a CUDA stream.
type Stream struct {
	c *Context
	s uintptr
}

// NewStream creates a non-blocking stream.
func (c *Context) NewStream() (*Stream, error) {
	s := &Stream{c: c}
	if err := c.d.check("cuStreamCreate", c.d.f.cuStreamCreate(&s.s, streamNonBlocking)); err != nil {
		return nil, err
	}
	return s, nil
}

// Handle is the raw CUstream (for cuBLAS and NCCL).
func (s *Stream) Handle() uintptr { return s.s }

// Synchronize waits for the stream's work.
func (s *Stream) Synchronize() error {
	return s.c.d.check("cuStreamSynchronize", s.c.d.f.cuStreamSynchronize(s.s))
}

// Destroy destroys the stream.
func (s *Stream) Destroy() error {
	return s.c.d.check("cuStreamDestroy_v2", s.c.d.f.cuStreamDestroy_v2(s.s))
}

// CopyHtoDAsync copies on the stream (src must stay valid until it ran).
func (s *Stream) CopyHtoDAsync(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	return s.c.d.check("cuMemcpyHtoDAsync_v2", s.c.d.f.cuMemcpyHtoDAsync_v2(dst, src, uintptr(bytes), s.s))
}

// CopyDtoHAsync copies on the stream.
func (s *Stream) CopyDtoHAsync(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	return s.c.d.check("cuMemcpyDtoHAsync_v2", s.c.d.f.cuMemcpyDtoHAsync_v2(dst, src, uintptr(bytes), s.s))
}

// CopyDtoDAsync copies device memory on the stream.
func (s *Stream) CopyDtoDAsync(dst, src DevicePtr, bytes int) error {
	return s.c.d.check("cuMemcpyDtoDAsync_v2", s.c.d.f.cuMemcpyDtoDAsync_v2(dst, src, uintptr(bytes), s.s))
}

// Memset32Async sets n 32-bit words to v.
func (s *Stream) Memset32Async(dst DevicePtr, v uint32, n int) error {
	return s.c.d.check("cuMemsetD32Async", s.c.d.f.cuMemsetD32Async(dst, v, uintptr(n), s.s))
}

// Event is a CUDA event, for timing and ordering.
type Event struct {
	c *Context
	e uintptr
}

// NewEvent creates an event that records timing.
func (c *Context) NewEvent() (*Event, error) {
	e := &Event{c: c}
	if err := c.d.check("cuEventCreate", c.d.f.cuEventCreate(&e.e, eventDefault)); err != nil {
		return nil, err
	}
	return e, nil
}

// Record records the event on s.
func (e *Event) Record(s *Stream) error {
	return e.c.d.check("cuEventRecord", e.c.d.f.cuEventRecord(e.e, s.s))
}

// Synchronize waits for the event.
func (e *Event) Synchronize() error {
	return e.c.d.check("cuEventSynchronize", e.c.d.f.cuEventSynchronize(e.e))
}

// ElapsedMs returns the milliseconds between start and e.
func (e *Event) ElapsedMs(start *Event) (float32, error) {
	var ms float32
	err := e.c.d.check("cuEventElapsedTime", e.c.d.f.cuEventElapsedTime(&ms, start.e, e.e))
	return ms, err
}

// Destroy destroys the event.
func (e *Event) Destroy() error {
	return e.c.d.check("cuEventDestroy_v2", e.c.d.f.cuEventDestroy_v2(e.e))
}

// Module is a loaded CUBIN or PTX image.
type Module struct {
	c *Context
	m uintptr
}

// LoadModule loads a CUBIN or NUL-terminated PTX image.
func (c *Context) LoadModule(image []byte) (*Module, error) {
	if len(image) == 0 {
		return nil, fmt.Errorf("cuda: cuModuleLoadData: empty image")
	}
	m := &Module{c: c}
	err := c.d.check("cuModuleLoadData", c.d.f.cuModuleLoadData(&m.m, unsafe.Pointer(&image[0])))
	runtime.KeepAlive(image)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Unload unloads the module.
func (m *Module) Unload() error {
	return m.c.d.check("cuModuleUnload", m.c.d.f.cuModuleUnload(m.m))
}

// Function is a kernel in a loaded module.
type Function struct {
	c    *Context
	f    uintptr
	Name string
}

// Function looks a kernel up by its (extern "C") name.
func (m *Module) Function(name string) (*Function, error) {
	f := &Function{c: m.c, Name: name}
	if err := m.c.d.check("cuModuleGetFunction("+name+")", m.c.d.f.cuModuleGetFunction(&f.f, m.m, name)); err != nil {
		return nil, err
	}
	return f, nil
}

// SetMaxDynamicShared allows launches with more than 48 KiB of dynamic
// shared memory.
func (f *Function) SetMaxDynamicShared(bytes int) error {
	return f.c.d.check("cuFuncSetAttribute("+f.Name+")", f.c.d.f.cuFuncSetAttribute(f.f, funcAttrMaxDynamicSharedSizeBytes, int32(bytes)))
}

// Dim3 is a grid or block size.
type Dim3 struct{ X, Y, Z int }

// Launch launches f on s. Each argument must be one of DevicePtr, uintptr,
// int32, uint32, int64 or float32 and must match the kernel's parameter.
func (f *Function) Launch(s *Stream, grid, block Dim3, sharedBytes int, args ...any) error {
	vals := make([]uint64, len(args))
	ptrs := make([]unsafe.Pointer, len(args)+1) // +1: never index an empty slice
	for i, a := range args {
		switch v := a.(type) {
		case DevicePtr:
			vals[i] = uint64(v)
		case uintptr:
			vals[i] = uint64(v)
		case int32:
			*(*int32)(unsafe.Pointer(&vals[i])) = v
		case uint32:
			*(*uint32)(unsafe.Pointer(&vals[i])) = v
		case int64:
			vals[i] = uint64(v)
		case float32:
			*(*float32)(unsafe.Pointer(&vals[i])) = v
		default:
			return fmt.Errorf("cuda: launch %s: argument %d has unsupported type %T", f.Name, i, a)
		}
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	for _, d := range []int{grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z} {
		if d <= 0 {
			return fmt.Errorf("cuda: launch %s: grid %v block %v has a non-positive size", f.Name, grid, block)
		}
	}
	r := f.c.d.f.cuLaunchKernel(f.f, uint32(grid.X), uint32(grid.Y), uint32(grid.Z),
		uint32(block.X), uint32(block.Y), uint32(block.Z), uint32(sharedBytes), s.s, &ptrs[0], nil)
	runtime.KeepAlive(vals)
	runtime.KeepAlive(ptrs)
	return f.c.d.check("cuLaunchKernel("+f.Name+")", r)
}
