package kernels

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/cpu"
)

// OpenBLAS is loaded at run time with purego (no cgo, no build tag): when
// libopenblas.so.0 is present the CPU backend's GEMM runs on it, otherwise
// on the pure-Go kernel. OpenBLAS's own threading is set to 1 because the
// backend already spreads tiles over all cores; two thread pools on the
// same cores would fight.
//
// The Fortran entry point sgemm_ is used rather than cblas_sgemm: it takes
// every argument by pointer, so purego.SyscallN can call it without
// reflection (no allocation per call) and without float register arguments.

// openblasLib is the shared library name tried by the CPU backend.
const openblasLib = "libopenblas.so.0"

var (
	openblasOnce  sync.Once
	openblasSgemm uintptr
	openblasCore  string
	openblasErr   error
)

// coreTypeEnv is OpenBLAS's kernel override, read once when the library loads.
const coreTypeEnv = "OPENBLAS_CORETYPE"

// featureCore names the OpenBLAS kernel the CPU's features support, for when
// OPENBLAS_CORETYPE is unset: OpenBLAS picks its kernel from a table of CPU
// models and falls back to a generic SSE3 one ("Prescott", about 5× slower)
// for models newer than the library (0.3.21 does this on model 207, Emerald
// Rapids). SkylakeX's and Haswell's sgemm kernels are what OpenBLAS itself
// uses on the AVX-512 and AVX2 models it knows.
func featureCore() string {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512DQ:
		return "SkylakeX"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return "Haswell"
	}
	return ""
}

func loadOpenBLAS() (uintptr, string, error) {
	openblasOnce.Do(func() {
		// Choose the kernel by CPU features unless the user chose one; set
		// the variable only while the library initialises.
		chosen := ""
		if _, set := os.LookupEnv(coreTypeEnv); !set {
			if chosen = featureCore(); chosen != "" {
				os.Setenv(coreTypeEnv, chosen)
				defer os.Unsetenv(coreTypeEnv)
			}
		}
		h, err := purego.Dlopen(openblasLib, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			openblasErr = fmt.Errorf("kernels: loading %s: %w", openblasLib, err)
			return
		}
		sym, err := purego.Dlsym(h, "sgemm_")
		if err != nil {
			openblasErr = fmt.Errorf("kernels: %s has no sgemm_: %w", openblasLib, err)
			return
		}
		if _, err := purego.Dlsym(h, "openblas_set_num_threads"); err == nil {
			var setThreads func(int32)
			purego.RegisterLibFunc(&setThreads, h, "openblas_set_num_threads")
			setThreads(1)
		}
		openblasCore = "openblas"
		if _, err := purego.Dlsym(h, "openblas_get_corename"); err == nil {
			var corename func() string
			purego.RegisterLibFunc(&corename, h, "openblas_get_corename")
			openblasCore = "openblas/" + corename()
		}
		if chosen != "" {
			openblasCore += " (by CPU features)"
		}
		openblasSgemm = sym
	})
	return openblasSgemm, openblasCore, openblasErr
}

// fortranArgs holds the by-pointer scalar arguments of one sgemm_ call.
// Each worker owns one, allocated once on the heap, so calls allocate nothing.
type fortranArgs struct {
	transA, transB byte
	m, n, k        int32
	lda, ldb, ldc  int32
	alpha, beta    float32
	argv           [13]uintptr
}

// openblasSgemmKernel calls sgemm_, translating row-major to Fortran's
// column-major: row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// so A and B swap places and m and n swap.
type openblasSgemmKernel struct {
	fn   uintptr
	core string
	args []*fortranArgs // one per worker
}

func (o *openblasSgemmKernel) name() string { return o.core }

func (o *openblasSgemmKernel) sgemm(worker int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 { // C = beta·C; sgemm_ would read A and B slices of length 0
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				if beta == 0 {
					row[j] = 0
				} else {
					row[j] *= beta
				}
			}
		}
		return
	}
	p := o.args[worker]
	p.transA, p.transB = 'N', 'N'
	if transB {
		p.transA = 'T'
	}
	if transA {
		p.transB = 'T'
	}
	p.m, p.n, p.k = int32(n), int32(m), int32(k)
	p.lda, p.ldb, p.ldc = int32(ldb), int32(lda), int32(ldc)
	p.alpha, p.beta = alpha, beta
	// The argument vector lives in p (heap, allocated once): passing a
	// fresh variadic list would allocate on every call, because SyscallN
	// is //go:uintptrescapes. Go's collector does not move heap objects,
	// and KeepAlive holds the matrices until sgemm_ returns.
	p.argv = [13]uintptr{
		uintptr(unsafe.Pointer(&p.transA)), uintptr(unsafe.Pointer(&p.transB)),
		uintptr(unsafe.Pointer(&p.m)), uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.k)),
		uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(&p.lda)),
		uintptr(unsafe.Pointer(unsafe.SliceData(a))), uintptr(unsafe.Pointer(&p.ldb)),
		uintptr(unsafe.Pointer(&p.beta)),
		uintptr(unsafe.Pointer(unsafe.SliceData(c))), uintptr(unsafe.Pointer(&p.ldc)),
	}
	purego.SyscallN(o.fn, p.argv[:]...)
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
	runtime.KeepAlive(p)
}
