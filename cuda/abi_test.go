package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
)

// abiC has stand-ins with the C parameter lists of the bindings most at
// risk from the calling convention: many arguments spilling to the stack,
// 64-bit integers among 32-bit ones, and a 128-byte struct by value. Each
// checks every argument it receives and returns 0, or the 1-based position
// of the first wrong one.
const abiC = `
#include <stddef.h>
#include <stdint.h>
typedef struct { char internal[128]; } uid_t128;
#define CHECK(i, cond) if (!(cond)) return i;

int gemm_sb(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int at, int lda, long long sa,
            const void *B, int bt, int ldb, long long sb, const void *beta, void *C, int ct, int ldc, long long sc,
            int batch, int compute, int algo) {
	CHECK(1, h == (void *)0x1111) CHECK(2, ta == 1) CHECK(3, tb == 0) CHECK(4, m == 300) CHECK(5, n == 200) CHECK(6, k == 72)
	CHECK(7, *(const float *)alpha == 0.125f) CHECK(8, A == (void *)0x7000000000) CHECK(9, at == 14) CHECK(10, lda == 3456)
	CHECK(11, sa == 72) CHECK(12, B == (void *)0x7000100000) CHECK(13, bt == 14) CHECK(14, ldb == 3456) CHECK(15, sb == 5000000000LL)
	CHECK(16, *(const float *)beta == 1.0f) CHECK(17, C == (void *)0x7000200000) CHECK(18, ct == 0) CHECK(19, ldc == 1024)
	CHECK(20, sc == -3) CHECK(21, batch == 16) CHECK(22, compute == 68) CHECK(23, algo == -1)
	return 0;
}

int launch(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem,
           void *stream, void **params, void **extra) {
	CHECK(1, f == (void *)0x2222) CHECK(2, gx == 4224) CHECK(3, gy == 7) CHECK(4, gz == 65535) CHECK(5, bx == 256)
	CHECK(6, by == 4) CHECK(7, bz == 1) CHECK(8, shmem == 49152) CHECK(9, stream == (void *)0x3333)
	CHECK(10, *(unsigned long long *)params[0] == 0x7000300000ULL && *(int *)params[1] == -5 &&
	          *(float *)params[2] == 2.5f && *(long long *)params[3] == 1LL << 40)
	CHECK(11, extra == NULL)
	return 0;
}

int init_rank(void **comm, int nranks, uid_t128 id, int rank) {
	for (int i = 0; i < 128; i++) CHECK(2 + i, (unsigned char)id.internal[i] == (unsigned char)(i * 7 + 3))
	CHECK(1, nranks == 8) CHECK(200, rank == 5)
	*comm = (void *)0x4444;
	return 0;
}

int layout(void **l, int t, uint64_t rows, uint64_t cols, int64_t ld) {
	CHECK(1, t == 14) CHECK(2, rows == (1ULL << 33)) CHECK(3, cols == 7) CHECK(4, ld == -(1LL << 35))
	*l = (void *)0x5555;
	return 0;
}

int memset32(unsigned long long dst, unsigned v, size_t n, void *s) {
	CHECK(1, dst == 0x7000400000ULL) CHECK(2, v == 0xdeadbeefu) CHECK(3, n == (size_t)1 << 34) CHECK(4, s == (void *)0x6666)
	return 0;
}
`

// TestCallingConventionAgainstC compiles abiC with the system C compiler and
// calls it through the very Go function types the CUDA bindings use, so a
// binding whose Go types would pass arguments where C does not expect them
// fails here, on any machine with gcc.
func TestCallingConventionAgainstC(t *testing.T) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc on this host (cgo builds need it, so CI has it)")
	}
	dir := t.TempDir()
	src, lib := filepath.Join(dir, "abi.c"), filepath.Join(dir, "libabi.so")
	if err := os.WriteFile(src, []byte(abiC), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	var (
		bf blasFuncs
		df driverFuncs
		nf ncclFuncs
		lf ltFuncs
	)
	if err := bind(h, "abi test", lib, []symbol{
		{"gemm_sb", &bf.cublasGemmStridedBatchedEx},
		{"launch", &df.cuLaunchKernel},
		{"init_rank", &nf.ncclCommInitRank},
		{"layout", &lf.cublasLtMatrixLayoutCreate},
		{"memset32", &df.cuMemsetD32Async},
	}); err != nil {
		t.Fatal(err)
	}
	alpha, beta := float32(0.125), float32(1)
	if r := bf.cublasGemmStridedBatchedEx(0x1111, 1, 0, 300, 200, 72, unsafe.Pointer(&alpha), 0x7000000000, R16BF, 3456, 72,
		0x7000100000, R16BF, 3456, 5000000000, unsafe.Pointer(&beta), 0x7000200000, R32F, 1024, -3, 16, computeType32F, gemmDefault); r != 0 {
		t.Errorf("cublasGemmStridedBatchedEx binding: C saw argument %d wrong", r)
	}

	vals := []uint64{0x7000300000, 0, 0, 1 << 40}
	*(*int32)(unsafe.Pointer(&vals[1])) = -5
	*(*float32)(unsafe.Pointer(&vals[2])) = 2.5
	ptrs := []unsafe.Pointer{unsafe.Pointer(&vals[0]), unsafe.Pointer(&vals[1]), unsafe.Pointer(&vals[2]), unsafe.Pointer(&vals[3])}
	if r := df.cuLaunchKernel(0x2222, 4224, 7, 65535, 256, 4, 1, 49152, 0x3333, &ptrs[0], nil); r != 0 {
		t.Errorf("cuLaunchKernel binding: C saw argument %d wrong", r)
	}

	var id UniqueID
	for i := range id.Internal {
		id.Internal[i] = byte(i*7 + 3)
	}
	var comm uintptr
	if r := nf.ncclCommInitRank(&comm, 8, id, 5); r != 0 || comm != 0x4444 {
		t.Errorf("ncclCommInitRank binding (128-byte struct by value): C saw argument %d wrong, comm %#x", r, comm)
	}

	var l uintptr
	if r := lf.cublasLtMatrixLayoutCreate(&l, R16BF, 1<<33, 7, -(1 << 35)); r != 0 || l != 0x5555 {
		t.Errorf("cublasLtMatrixLayoutCreate binding: C saw argument %d wrong", r)
	}
	if r := df.cuMemsetD32Async(0x7000400000, 0xdeadbeef, 1<<34, 0x6666); r != 0 {
		t.Errorf("cuMemsetD32Async binding: C saw argument %d wrong", r)
	}
}
