package kernels

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// sgemmKernel is a single-threaded row-major SGEMM (C = alpha·op(A)·op(B) +
// beta·C). The CPU backend parallelises over tiles of C itself, so one
// kernel call runs on the calling goroutine only. worker selects that
// goroutine's private scratch, if the kernel keeps any.
type sgemmKernel interface {
	sgemm(worker int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	name() string
}

// goSgemm is the pure-Go kernel: gonum's Sgemm (assembly inner loops), fed
// tiles small enough that gonum stays serial and allocation-free.
type goSgemm struct{}

func (goSgemm) name() string { return "go" }

// goTileM and goTileN keep ceil(m/64)·ceil(n/64) < 4, gonum's threshold for
// spawning its own goroutines (which would allocate and oversubscribe).
const goTileM, goTileN = 64, 128

func (goSgemm) sgemm(_ int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	tA, tB := blas.NoTrans, blas.NoTrans
	if transA {
		tA = blas.Trans
	}
	if transB {
		tB = blas.Trans
	}
	impl := gonum.Implementation{}
	for i := 0; i < m; i += goTileM {
		mi := min(goTileM, m-i)
		var ai []float32
		if transA {
			ai = a[i:]
		} else {
			ai = a[i*lda:]
		}
		for j := 0; j < n; j += goTileN {
			nj := min(goTileN, n-j)
			var bj []float32
			if transB {
				bj = b[j*ldb:]
			} else {
				bj = b[j:]
			}
			impl.Sgemm(tA, tB, mi, nj, k, alpha, ai, lda, bj, ldb, beta, c[i*ldc+j:], ldc)
		}
	}
}

// gemmJob splits C into row or column tiles and runs the kernel on each.
type gemmJob struct {
	kern           sgemmKernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	bias           []float32 // added to every row of C after the product, or nil
	byRows         bool
	tile           int
}

func (j *gemmJob) run(worker, lo, hi int) {
	for t := lo; t < hi; t++ {
		if j.byRows {
			i0 := t * j.tile
			mi := min(j.tile, j.m-i0)
			var a []float32
			if j.transA {
				a = j.a[i0:]
			} else {
				a = j.a[i0*j.lda:]
			}
			j.kern.sgemm(worker, j.transA, j.transB, mi, j.n, j.k, j.alpha, a, j.lda, j.b, j.ldb, j.beta, j.c[i0*j.ldc:], j.ldc)
			if j.bias != nil {
				addBias(j.c[i0*j.ldc:], j.bias[:j.n], mi, j.ldc)
			}
		} else {
			j0 := t * j.tile
			nj := min(j.tile, j.n-j0)
			var b []float32
			if j.transB {
				b = j.b[j0*j.ldb:]
			} else {
				b = j.b[j0:]
			}
			j.kern.sgemm(worker, j.transA, j.transB, j.m, nj, j.k, j.alpha, j.a, j.lda, b, j.ldb, j.beta, j.c[j0:], j.ldc)
			if j.bias != nil {
				addBias(j.c[j0:], j.bias[j0:j0+nj], j.m, j.ldc)
			}
		}
	}
}

// gemmBatchJob runs one whole GEMM per item.
type gemmBatchJob struct {
	kern                      sgemmKernel
	transA, transB            bool
	m, n, k                   int
	alpha, beta               float32
	a, b, c                   []float32
	lda, ldb, ldc             int
	strideA, strideB, strideC int
}

func (j *gemmBatchJob) run(worker, lo, hi int) {
	for i := lo; i < hi; i++ {
		j.kern.sgemm(worker, j.transA, j.transB, j.m, j.n, j.k, j.alpha, j.a[i*j.strideA:], j.lda, j.b[i*j.strideB:], j.ldb, j.beta, j.c[i*j.strideC:], j.ldc)
	}
}

// addBias adds bias to each of the rows rows of c (row stride ldc).
func addBias(c, bias []float32, rows, ldc int) {
	for i := 0; i < rows; i++ {
		row := c[i*ldc : i*ldc+len(bias)]
		for k, v := range bias {
			row[k] += v
		}
	}
}
