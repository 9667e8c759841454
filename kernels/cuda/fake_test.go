package cuda

import (
	"fmt"
	"sort"
	"testing"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
)

// fakeDevice is a device that computes nothing: it hands out address
// ranges, records every launch and GEMM, and checks that each device
// pointer an op passes lies inside memory it handed out (a GEMM's whole
// operand extents, too). With it every op of the backend runs through its
// real code path (staging, scratch, shape math, argument checks) on a host
// without a GPU.
type fakeDevice struct {
	t        *testing.T
	next     uintptr
	blocks   map[uintptr]uintptr // scratch/device lo -> hi
	managed  map[uintptr][]float32
	launches []fakeLaunch
	gemms    []cu.GemmOp
	copies   int
	// pointerGemms counts gemmPointers calls (each also lands in gemms per batch entry).
	pointerGemms int
	syncs        int
	zeros        int
	freeMem      uint64
	noLtAlgo     bool // linearBias answers cu.ErrNoAlgo
	// emulate: memory is real and kernels and GEMMs run (emu_test.go).
	emulate bool
	backing map[uintptr][]uint64
	// uploads keeps small host→device copies (pointer arrays) when not emulating.
	uploads map[uintptr][]byte
	dinfo   cu.DeviceInfo
	// optIns is each kernel's dynamic shared memory limit raised by
	// optInShared (a launch above 48 KiB without it fails, as on a GPU).
	optIns map[string]int
}

type fakeLaunch struct {
	name string
	cfg  launchCfg
	args []any
}

func newFakeDevice(t *testing.T) *fakeDevice {
	return &fakeDevice{t: t, next: 1 << 44, blocks: map[uintptr]uintptr{}, managed: map[uintptr][]float32{}, backing: map[uintptr][]uint64{}, uploads: map[uintptr][]byte{}, optIns: map[string]int{}, freeMem: 140 << 30,
		dinfo: cu.DeviceInfo{Name: "Fake H200", ComputeMajor: 9, Multiprocessors: 132, MaxSharedPerBlockOptin: 227 << 10, TotalMemory: 141 << 30}}
}

func (f *fakeDevice) bind() (func(), error) { return func() {}, nil }

// inside reports whether [p, p+bytes) lies in one allocation.
func (f *fakeDevice) inside(p cu.DevicePtr, bytes int) bool {
	a := uintptr(p)
	for lo, hi := range f.blocks {
		if a >= lo && a+uintptr(bytes) <= hi {
			return true
		}
	}
	for lo, s := range f.managed {
		if a >= lo && a+uintptr(bytes) <= lo+uintptr(len(s))*4 {
			return true
		}
	}
	return false
}

func (f *fakeDevice) launch(name string, cfg launchCfg, args ...any) error {
	for i, a := range args {
		if p, ok := a.(cu.DevicePtr); ok && p != 0 && !f.inside(p, 1) {
			f.t.Errorf("launch %s: argument %d = %#x points outside every allocation", name, i, uintptr(p))
		}
	}
	if cfg.shared > defaultSharedLimit && f.optIns[name] < cfg.shared || cfg.shared > f.dinfo.MaxSharedPerBlockOptin {
		f.t.Errorf("launch %s: %d bytes of dynamic shared memory, opted in to %d, the device allows %d", name, cfg.shared, f.optIns[name], f.dinfo.MaxSharedPerBlockOptin)
		return fmt.Errorf("fake: launch %s: CUDA_ERROR_INVALID_VALUE", name)
	}
	f.launches = append(f.launches, fakeLaunch{name, cfg, args})
	if f.emulate {
		return emuKernel(f, name, cfg, args)
	}
	return nil
}

// optInShared records the raised limit (cuFuncSetAttribute on a GPU).
func (f *fakeDevice) optInShared(kernel string, bytes int) error {
	if bytes > f.dinfo.MaxSharedPerBlockOptin {
		return fmt.Errorf("fake: cuFuncSetAttribute(%s, %d bytes): CUDA_ERROR_INVALID_VALUE", kernel, bytes)
	}
	f.optIns[kernel] = bytes
	return nil
}

// mem views device memory from p to the end of the allocation holding it
// (nil for p == 0), so an emulated kernel that indexes past its
// allocation panics.
func (f *fakeDevice) mem(p cu.DevicePtr) []float32 { return f32s(p, f.bytesFrom(p)/4) }

// bytesFrom is the bytes from p to the end of its allocation (0 for p == 0).
func (f *fakeDevice) bytesFrom(p cu.DevicePtr) int {
	if p == 0 {
		return 0
	}
	a := uintptr(p)
	for lo, hi := range f.blocks {
		if a >= lo && a < hi {
			return int(hi - a)
		}
	}
	for lo, s := range f.managed {
		if hi := lo + uintptr(len(s))*4; a >= lo && a < hi {
			return int(hi - a)
		}
	}
	f.t.Errorf("emulator: %#x is in no allocation", a)
	return 0
}

// tensor views device memory from p to the end of its allocation as a
// kernel's tensor argument: bf16 values when bf, else float32 (the zero
// emuTensor for p == 0).
func (f *fakeDevice) tensor(p cu.DevicePtr, bf bool) emuTensor {
	if bf {
		return emuTensor{h: u16s(p, f.bytesFrom(p)/2)}
	}
	return emuTensor{f: f.mem(p)}
}

func (f *fakeDevice) gemm(g cu.GemmOp) error {
	elem := 4
	if g.AB == cu.R16BF {
		elem = 2
	}
	rowsA, colsA := g.M, g.K
	if g.TransA {
		rowsA, colsA = g.K, g.M
	}
	rowsB, colsB := g.K, g.N
	if g.TransB {
		rowsB, colsB = g.N, g.K
	}
	for _, o := range []struct {
		name       string
		p          cu.DevicePtr
		rows, cols int
		ld         int
		stride     int64
		elem       int
	}{
		{"A", g.A, rowsA, colsA, g.Lda, g.StrideA, elem},
		{"B", g.B, rowsB, colsB, g.Ldb, g.StrideB, elem},
		{"C", g.C, g.M, g.N, g.Ldc, g.StrideC, map[cu.DataType]int{cu.R32F: 4, cu.R16BF: 2}[g.CT]},
	} {
		if o.ld < o.cols {
			f.t.Errorf("gemm %s: leading dimension %d < %d columns (%+v)", o.name, o.ld, o.cols, g)
		}
		if span := gemmSpan(o.rows, o.cols, o.ld, g.Batch, o.stride); !f.inside(o.p, span*o.elem) {
			f.t.Errorf("gemm %s: %d elements at %#x overflow their allocation (%+v)", o.name, span, uintptr(o.p), g)
		}
	}
	f.gemms = append(f.gemms, g)
	if f.emulate {
		emuGemm(g)
	}
	return nil
}

func (f *fakeDevice) gemmPointers(g cu.GemmOp, ptrs cu.DevicePtr) error {
	var raw []byte
	if f.emulate {
		raw = unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&ptrs))), 24*g.Batch)
	} else if raw = f.uploads[uintptr(ptrs)]; len(raw) < 24*g.Batch {
		f.t.Errorf("gemmPointers: no pointer array of %d entries uploaded at %#x", 3*g.Batch, uintptr(ptrs))
		return nil
	}
	addr := func(i int) cu.DevicePtr { return cu.DevicePtr(*(*uint64)(unsafe.Pointer(&raw[8*i]))) }
	f.pointerGemms++
	for i := 0; i < g.Batch; i++ {
		one := g
		one.Batch, one.StrideA, one.StrideB, one.StrideC = 1, 0, 0, 0
		one.A, one.B, one.C = addr(i), addr(g.Batch+i), addr(2*g.Batch+i)
		if err := f.gemm(one); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeDevice) linearBias(out, in, w, bias cu.DevicePtr, rows, inDim, outDim int, ab, ct cu.DataType) error {
	if f.noLtAlgo {
		return cu.ErrNoAlgo
	}
	outElem := map[cu.DataType]int{cu.R32F: 4, cu.R16BF: 2}[ct]
	if !f.inside(out, rows*outDim*outElem) || !f.inside(in, rows*inDim*2) || !f.inside(w, outDim*inDim*2) || !f.inside(bias, outDim*4) {
		f.t.Errorf("linearBias operands overflow their allocations")
	}
	g := cu.GemmOp{TransB: true, M: rows, N: outDim, K: inDim, Alpha: 1, A: in, B: w, C: out, Lda: inDim, Ldb: inDim, Ldc: outDim, AB: ab, CT: ct}
	f.gemms = append(f.gemms, g)
	if f.emulate {
		// The epilogue adds the bias to the fp32 sum and rounds once.
		emuGemmBias(g, f32s(bias, outDim))
	}
	return nil
}

func (f *fakeDevice) alloc(bytes int) (cu.DevicePtr, error) {
	if f.emulate {
		m := make([]uint64, (bytes+7)/8)
		p := uintptr(unsafe.Pointer(&m[0]))
		f.backing[p] = m
		f.blocks[p] = p + uintptr(bytes)
		return cu.DevicePtr(p), nil
	}
	p := f.next
	f.blocks[p] = p + uintptr(bytes)
	f.next += uintptr(bytes+4095) &^ 4095
	return cu.DevicePtr(p), nil
}

func (f *fakeDevice) allocManaged(bytes int) (cu.DevicePtr, error) {
	s := make([]float32, bytes/4)
	p := uintptr(unsafe.Pointer(&s[0]))
	f.managed[p] = s
	return cu.DevicePtr(p), nil
}

func (f *fakeDevice) zero(p cu.DevicePtr, n int) error {
	if !f.inside(p, 4*n) {
		f.t.Errorf("zero of %d floats at %#x overflows", n, uintptr(p))
	}
	f.zeros++
	if f.emulate {
		clear(f32s(p, n))
	}
	return nil
}

func (f *fakeDevice) free(p cu.DevicePtr) error {
	if _, ok := f.blocks[uintptr(p)]; ok {
		delete(f.blocks, uintptr(p))
		delete(f.backing, uintptr(p))
		return nil
	}
	if _, ok := f.managed[uintptr(p)]; ok {
		delete(f.managed, uintptr(p))
		return nil
	}
	return fmt.Errorf("fake: free of unknown %#x", uintptr(p))
}

func (f *fakeDevice) copyHtoD(dst cu.DevicePtr, src unsafe.Pointer, bytes int) error {
	if !f.inside(dst, bytes) {
		f.t.Errorf("copyHtoD of %d bytes to %#x overflows", bytes, uintptr(dst))
	}
	f.copies++
	if f.emulate {
		copy(unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&dst))), bytes), unsafe.Slice((*byte)(src), bytes))
	} else if bytes <= 1<<20 {
		f.uploads[uintptr(dst)] = append([]byte(nil), unsafe.Slice((*byte)(src), bytes)...)
	}
	return nil
}

func (f *fakeDevice) copyDtoH(dst unsafe.Pointer, src cu.DevicePtr, bytes int) error {
	if !f.inside(src, bytes) {
		f.t.Errorf("copyDtoH of %d bytes from %#x overflows", bytes, uintptr(src))
	}
	f.copies++
	if f.emulate {
		copy(unsafe.Slice((*byte)(dst), bytes), unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&src))), bytes))
	}
	return nil
}

func (f *fakeDevice) memFree() (uint64, error) { return f.freeMem, nil }
func (f *fakeDevice) sync() error              { f.syncs++; return nil }
func (f *fakeDevice) close() error             { return nil }
func (f *fakeDevice) info() cu.DeviceInfo      { return f.dinfo }

var (
	_ device        = (*fakeDevice)(nil)
	_ sharedOptIner = (*fakeDevice)(nil)
	_ sharedOptIner = (*gpu)(nil)
)

// kernelsLaunched lists the distinct kernel names launched, sorted.
func (f *fakeDevice) kernelsLaunched() []string {
	seen := map[string]bool{}
	for _, l := range f.launches {
		seen[l.name] = true
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
