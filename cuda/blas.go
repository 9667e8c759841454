package cuda

import (
	"fmt"
	"sync"
	"unsafe"
)

// DataType is a cudaDataType (the element type of a GEMM operand).
type DataType int32

// Element types and cuBLAS constants (pinned in prototypes.h).
const (
	R32F  DataType = 0  // CUDA_R_32F
	R16BF DataType = 14 // CUDA_R_16BF

	blasSuccess              = 0
	blasOpN                  = 0
	blasOpT                  = 1
	blasDefaultMath          = 0
	blasPedanticMath         = 2
	computeType32F           = 68 // CUBLAS_COMPUTE_32F
	computeType32FPedantic   = 69 // CUBLAS_COMPUTE_32F_PEDANTIC
	gemmDefault              = -1 // CUBLAS_GEMM_DEFAULT
	ltDescTransA             = 3
	ltDescTransB             = 4
	ltDescEpilogue           = 7
	ltDescBiasPointer        = 8
	ltDescBiasDataType       = 26
	ltEpilogueDefault        = 1
	ltEpilogueBias           = 4
	ltPrefMaxWorkspaceBytes  = 1
	ltPrefMinAlignmentC      = 7
	ltPrefMinAlignmentD      = 8
	ltHeuristicResultBytes   = 96
	ltMatmulAlgoBytes        = 64
	ltHeuristicWorkspaceSize = 64 // offset of workspaceSize in the result
)

// blasFuncs are the bound libcublas entry points (see prototypes.h).
type blasFuncs struct {
	cublasCreate_v2       func(h *uintptr) int32
	cublasDestroy_v2      func(h uintptr) int32
	cublasSetStream_v2    func(h, s uintptr) int32
	cublasSetMathMode     func(h uintptr, mode int32) int32
	cublasSetWorkspace_v2 func(h uintptr, ws DevicePtr, bytes uintptr) int32
	cublasGetStatusString func(status int32) string
	cublasGemmEx          func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, a DevicePtr, at DataType, lda int32, b DevicePtr, bt DataType, ldb int32, beta unsafe.Pointer, c DevicePtr, ct DataType, ldc int32, compute int32, algo int32) int32
	// the arrays are device addresses of batch pointers each.
	cublasGemmBatchedEx func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, a DevicePtr, at DataType, lda int32, b DevicePtr, bt DataType, ldb int32, beta unsafe.Pointer, c DevicePtr, ct DataType, ldc int32, batch int32, compute int32, algo int32) int32
	// strides are long long: int64.
	cublasGemmStridedBatchedEx func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, a DevicePtr, at DataType, lda int32, sa int64, b DevicePtr, bt DataType, ldb int32, sb int64, beta unsafe.Pointer, c DevicePtr, ct DataType, ldc int32, sc int64, batch int32, compute int32, algo int32) int32
}

func (f *blasFuncs) symbols() []symbol {
	return []symbol{
		{"cublasCreate_v2", &f.cublasCreate_v2},
		{"cublasDestroy_v2", &f.cublasDestroy_v2},
		{"cublasSetStream_v2", &f.cublasSetStream_v2},
		{"cublasSetMathMode", &f.cublasSetMathMode},
		{"cublasSetWorkspace_v2", &f.cublasSetWorkspace_v2},
		{"cublasGetStatusString", &f.cublasGetStatusString},
		{"cublasGemmEx", &f.cublasGemmEx},
		{"cublasGemmBatchedEx", &f.cublasGemmBatchedEx},
		{"cublasGemmStridedBatchedEx", &f.cublasGemmStridedBatchedEx},
	}
}

// ltFuncs are the bound libcublasLt entry points (see prototypes.h).
type ltFuncs struct {
	cublasLtCreate                       func(h *uintptr) int32
	cublasLtDestroy                      func(h uintptr) int32
	cublasLtMatmulDescCreate             func(d *uintptr, compute int32, scale DataType) int32
	cublasLtMatmulDescDestroy            func(d uintptr) int32
	cublasLtMatmulDescSetAttribute       func(d uintptr, attr int32, buf unsafe.Pointer, size uintptr) int32
	cublasLtMatrixLayoutCreate           func(l *uintptr, t DataType, rows, cols uint64, ld int64) int32
	cublasLtMatrixLayoutDestroy          func(l uintptr) int32
	cublasLtMatmulPreferenceCreate       func(p *uintptr) int32
	cublasLtMatmulPreferenceDestroy      func(p uintptr) int32
	cublasLtMatmulPreferenceSetAttribute func(p uintptr, attr int32, buf unsafe.Pointer, size uintptr) int32
	cublasLtMatmulAlgoGetHeuristic       func(h, op, a, b, c, d, pref uintptr, requested int32, results *byte, returned *int32) int32
	cublasLtMatmul                       func(h, op uintptr, alpha unsafe.Pointer, a DevicePtr, al uintptr, b DevicePtr, bl uintptr, beta unsafe.Pointer, c DevicePtr, cl uintptr, d DevicePtr, dl uintptr, algo *byte, ws DevicePtr, wsBytes uintptr, s uintptr) int32
}

func (f *ltFuncs) symbols() []symbol {
	return []symbol{
		{"cublasLtCreate", &f.cublasLtCreate},
		{"cublasLtDestroy", &f.cublasLtDestroy},
		{"cublasLtMatmulDescCreate", &f.cublasLtMatmulDescCreate},
		{"cublasLtMatmulDescDestroy", &f.cublasLtMatmulDescDestroy},
		{"cublasLtMatmulDescSetAttribute", &f.cublasLtMatmulDescSetAttribute},
		{"cublasLtMatrixLayoutCreate", &f.cublasLtMatrixLayoutCreate},
		{"cublasLtMatrixLayoutDestroy", &f.cublasLtMatrixLayoutDestroy},
		{"cublasLtMatmulPreferenceCreate", &f.cublasLtMatmulPreferenceCreate},
		{"cublasLtMatmulPreferenceDestroy", &f.cublasLtMatmulPreferenceDestroy},
		{"cublasLtMatmulPreferenceSetAttribute", &f.cublasLtMatmulPreferenceSetAttribute},
		{"cublasLtMatmulAlgoGetHeuristic", &f.cublasLtMatmulAlgoGetHeuristic},
		{"cublasLtMatmul", &f.cublasLtMatmul},
	}
}

// BLAS is the loaded cuBLAS and cuBLASLt (one per process).
type BLAS struct {
	f      blasFuncs
	lt     ltFuncs
	Path   string
	LtPath string
}

var (
	blasOnce sync.Once
	blasVal  *BLAS
	blasErr  error
)

// LoadBLAS loads libcublas and libcublasLt once per process.
func LoadBLAS() (*BLAS, error) {
	blasOnce.Do(func() {
		b := &BLAS{}
		// cuBLASLt first: libcublas depends on it, and loading it
		// explicitly from the same folder avoids a mismatched pair.
		if b.LtPath, blasErr = loadAndBind(specLt, b.lt.symbols()); blasErr != nil {
			return
		}
		if b.Path, blasErr = loadAndBind(specCUBLAS, b.f.symbols()); blasErr != nil {
			return
		}
		blasVal = b
	})
	return blasVal, blasErr
}

func (b *BLAS) check(call string, r int32) error {
	if r == blasSuccess {
		return nil
	}
	e := &Error{Call: call, Code: int(r)}
	if b.f.cublasGetStatusString != nil {
		e.Name = b.f.cublasGetStatusString(r)
	}
	return e
}

// BLASHandle is a cuBLAS + cuBLASLt handle pair bound to one stream, with a
// workspace. Used by one goroutine at a time, with its context bound.
type BLASHandle struct {
	b        *BLAS
	h, lt    uintptr
	stream   uintptr
	ws       DevicePtr
	wsBytes  int
	pedantic bool
}

// NewHandle creates handles on stream s with a device workspace of
// wsBytes (32 MiB is what cuBLAS recommends on Hopper). pedantic selects
// strict fp32 (no TF32) math for the fp32 path.
func (b *BLAS) NewHandle(s *Stream, ws DevicePtr, wsBytes int, pedantic bool) (*BLASHandle, error) {
	h := &BLASHandle{b: b, stream: s.Handle(), ws: ws, wsBytes: wsBytes, pedantic: pedantic}
	if err := b.check("cublasCreate_v2", b.f.cublasCreate_v2(&h.h)); err != nil {
		return nil, err
	}
	if err := b.check("cublasLtCreate", b.lt.cublasLtCreate(&h.lt)); err != nil {
		b.f.cublasDestroy_v2(h.h)
		return nil, err
	}
	mode := int32(blasDefaultMath)
	if pedantic {
		mode = blasPedanticMath
	}
	for _, step := range []struct {
		call string
		r    func() int32
	}{
		{"cublasSetStream_v2", func() int32 { return b.f.cublasSetStream_v2(h.h, h.stream) }},
		{"cublasSetMathMode", func() int32 { return b.f.cublasSetMathMode(h.h, mode) }},
		{"cublasSetWorkspace_v2", func() int32 { return b.f.cublasSetWorkspace_v2(h.h, ws, uintptr(wsBytes)) }},
	} {
		if err := b.check(step.call, step.r()); err != nil {
			h.Destroy()
			return nil, err
		}
	}
	return h, nil
}

// Destroy frees the handles (not the workspace, which the caller owns).
func (h *BLASHandle) Destroy() error {
	err1 := h.b.check("cublasLtDestroy", h.b.lt.cublasLtDestroy(h.lt))
	err2 := h.b.check("cublasDestroy_v2", h.b.f.cublasDestroy_v2(h.h))
	if err1 != nil {
		return err1
	}
	return err2
}

// GemmOp describes one row-major GEMM: C[m,n] = alpha·op(A)·op(B) + beta·C
// with op(A) [m,k] and op(B) [k,n]; A is stored [k,m] when TransA, B is
// stored [n,k] when TransB; Lda/Ldb/Ldc are row strides in elements. A and
// B have element type AB (R32F or R16BF); C has type CT, and accumulation
// is fp32. Batch > 1 uses the Stride* element strides.
type GemmOp struct {
	TransA, TransB bool
	M, N, K        int
	Alpha, Beta    float32
	A, B, C        DevicePtr
	Lda, Ldb, Ldc  int
	AB             DataType
	// CT is C's element type: R32F (the zero value) or, with AB R16BF,
	// R16BF (an output rounded once from the fp32 accumulator).
	CT                        DataType
	Batch                     int
	StrideA, StrideB, StrideC int64
}

// CublasArgs is the column-major call cuBLAS receives for a row-major
// GemmOp (the operands, sizes and transposes; C, Ldc and the strides of C
// are unchanged).
type CublasArgs struct {
	TransA, TransB   bool
	M, N, K          int
	A, B             DevicePtr
	Lda, Ldb         int
	StrideA, StrideB int64
}

// Cublas maps a row-major GEMM to cuBLAS's column-major one: row-major
// C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, where a row-major
// matrix read column-major is its transpose. So cuBLAS gets (B, A)
// swapped, m and n swapped, and the same transpose flags.
func (g GemmOp) Cublas() CublasArgs {
	return CublasArgs{TransA: g.TransB, TransB: g.TransA, M: g.N, N: g.M, K: g.K, A: g.B, B: g.A,
		Lda: g.Ldb, Ldb: g.Lda, StrideA: g.StrideB, StrideB: g.StrideA}
}

func blasOp(t bool) int32 {
	if t {
		return blasOpT
	}
	return blasOpN
}

// Gemm runs g on the handle's stream (cublasGemmEx, or
// cublasGemmStridedBatchedEx when Batch > 1), fp32 accumulation.
func (h *BLASHandle) Gemm(g GemmOp) error {
	if g.M == 0 || g.N == 0 {
		return nil
	}
	c := g.Cublas()
	ta, tb, m, n, k := blasOp(c.TransA), blasOp(c.TransB), int32(c.M), int32(c.N), int32(c.K)
	a, b, lda, ldb, sa, sb := c.A, c.B, int32(c.Lda), int32(c.Ldb), c.StrideA, c.StrideB
	compute := int32(computeType32F)
	if h.pedantic && g.AB == R32F {
		compute = computeType32FPedantic
	}
	alpha, beta := g.Alpha, g.Beta
	if g.Batch <= 1 {
		return h.b.check("cublasGemmEx", h.b.f.cublasGemmEx(h.h, ta, tb, m, n, k, unsafe.Pointer(&alpha), a, g.AB, lda, b, g.AB, ldb,
			unsafe.Pointer(&beta), g.C, g.CT, int32(g.Ldc), compute, gemmDefault))
	}
	return h.b.check("cublasGemmStridedBatchedEx", h.b.f.cublasGemmStridedBatchedEx(h.h, ta, tb, m, n, k, unsafe.Pointer(&alpha), a, g.AB, lda, sa, b, g.AB, ldb, sb,
		unsafe.Pointer(&beta), g.C, g.CT, int32(g.Ldc), g.StrideC, int32(g.Batch), compute, gemmDefault))
}

// GemmPointers runs Batch GEMMs of g's shape whose operands are listed in
// device memory at ptrs: Batch A addresses, then Batch B, then Batch C
// (row-major operands, as in GemmOp; g's A, B, C and strides are unused).
// One call covers operands no single stride describes, such as every
// (sample, head) pair of an attention.
func (h *BLASHandle) GemmPointers(g GemmOp, ptrs DevicePtr) error {
	if g.M == 0 || g.N == 0 || g.Batch == 0 {
		return nil
	}
	c := g.Cublas()
	compute := int32(computeType32F)
	if h.pedantic && g.AB == R32F {
		compute = computeType32FPedantic
	}
	// Cublas swaps the operands, so cuBLAS's A array is our B array.
	aArr, bArr, cArr := ptrs+DevicePtr(8*g.Batch), ptrs, ptrs+DevicePtr(16*g.Batch)
	alpha, beta := g.Alpha, g.Beta
	return h.b.check("cublasGemmBatchedEx", h.b.f.cublasGemmBatchedEx(h.h, blasOp(c.TransA), blasOp(c.TransB), int32(c.M), int32(c.N), int32(c.K),
		unsafe.Pointer(&alpha), aArr, g.AB, int32(c.Lda), bArr, g.AB, int32(c.Ldb), unsafe.Pointer(&beta), cArr, g.CT, int32(g.Ldc), int32(g.Batch), compute, gemmDefault))
}

// LinearBias computes out[rows,outDim] = in[rows,inDim]·W[outDim,inDim]ᵀ +
// bias[outDim] in one cuBLASLt call with the bias epilogue (in and W of
// type ab, out of type ct, bias fp32, accumulation fp32). It returns
// ErrNoAlgo when cuBLASLt has no algorithm for the shape or the types, so
// the caller can fall back to Gemm + a bias kernel.
func (h *BLASHandle) LinearBias(out, in, w, bias DevicePtr, rows, inDim, outDim int, ab, ct DataType) error {
	lt := &h.b.lt
	var desc uintptr
	if err := h.b.check("cublasLtMatmulDescCreate", lt.cublasLtMatmulDescCreate(&desc, computeType32F, R32F)); err != nil {
		return err
	}
	defer lt.cublasLtMatmulDescDestroy(desc)
	// Column-major view: outᵀ[outDim,rows] = W[outDim,inDim] (stored as
	// inDim×outDim column-major, so transposed) · inᵀ[inDim,rows].
	transA, transB, epi := int32(blasOpT), int32(blasOpN), int32(ltEpilogueBias)
	biasType := R32F
	biasPtr := bias
	for _, a := range []struct {
		attr int32
		p    unsafe.Pointer
		n    uintptr
	}{
		{ltDescTransA, unsafe.Pointer(&transA), 4},
		{ltDescTransB, unsafe.Pointer(&transB), 4},
		{ltDescEpilogue, unsafe.Pointer(&epi), 4},
		{ltDescBiasPointer, unsafe.Pointer(&biasPtr), 8},
		{ltDescBiasDataType, unsafe.Pointer(&biasType), 4},
	} {
		if err := h.b.check("cublasLtMatmulDescSetAttribute", lt.cublasLtMatmulDescSetAttribute(desc, a.attr, a.p, a.n)); err != nil {
			return fmt.Errorf("attribute %d: %w", a.attr, err)
		}
	}
	var la, lb, lc uintptr
	if err := h.b.check("cublasLtMatrixLayoutCreate", lt.cublasLtMatrixLayoutCreate(&la, ab, uint64(inDim), uint64(outDim), int64(inDim))); err != nil {
		return err
	}
	defer lt.cublasLtMatrixLayoutDestroy(la)
	if err := h.b.check("cublasLtMatrixLayoutCreate", lt.cublasLtMatrixLayoutCreate(&lb, ab, uint64(inDim), uint64(rows), int64(inDim))); err != nil {
		return err
	}
	defer lt.cublasLtMatrixLayoutDestroy(lb)
	if err := h.b.check("cublasLtMatrixLayoutCreate", lt.cublasLtMatrixLayoutCreate(&lc, ct, uint64(outDim), uint64(rows), int64(outDim))); err != nil {
		return err
	}
	defer lt.cublasLtMatrixLayoutDestroy(lc)
	var pref uintptr
	if err := h.b.check("cublasLtMatmulPreferenceCreate", lt.cublasLtMatmulPreferenceCreate(&pref)); err != nil {
		return err
	}
	defer lt.cublasLtMatmulPreferenceDestroy(pref)
	wsBytes := uint64(h.wsBytes)
	if err := h.b.check("cublasLtMatmulPreferenceSetAttribute", lt.cublasLtMatmulPreferenceSetAttribute(pref, ltPrefMaxWorkspaceBytes, unsafe.Pointer(&wsBytes), 8)); err != nil {
		return err
	}
	// The heuristic assumes 256-byte aligned matrices unless told: out may
	// be a view into a larger buffer (A and B are the caller's scratch).
	align := Alignment(out)
	for _, attr := range []int32{ltPrefMinAlignmentC, ltPrefMinAlignmentD} {
		if err := h.b.check("cublasLtMatmulPreferenceSetAttribute", lt.cublasLtMatmulPreferenceSetAttribute(pref, attr, unsafe.Pointer(&align), 4)); err != nil {
			return err
		}
	}
	var result [ltHeuristicResultBytes]byte
	var found int32
	if err := h.b.check("cublasLtMatmulAlgoGetHeuristic", lt.cublasLtMatmulAlgoGetHeuristic(h.lt, desc, la, lb, lc, lc, pref, 1, &result[0], &found)); err != nil || found == 0 {
		return ErrNoAlgo
	}
	alpha, beta := float32(1), float32(0)
	return h.b.check("cublasLtMatmul", lt.cublasLtMatmul(h.lt, desc, unsafe.Pointer(&alpha), w, la, in, lb, unsafe.Pointer(&beta), out, lc, out, lc,
		&result[0], h.ws, uintptr(h.wsBytes), h.stream))
}

// Alignment is the largest power of two, at most 256, dividing p.
func Alignment(p DevicePtr) uint32 {
	a := uint32(256)
	for a > 1 && uint64(p)%uint64(a) != 0 {
		a >>= 1
	}
	return a
}

// ErrNoAlgo means cuBLASLt offered no algorithm for a shape.
var ErrNoAlgo = fmt.Errorf("cuda: cuBLASLt has no algorithm for this shape")
