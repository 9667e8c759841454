package kernels

import (
	"math"
	"runtime"
)

// CPUOptions configures a CPU backend.
type CPUOptions struct {
	// Workers is the number of goroutines an op is spread over, the caller
	// included; 0 means runtime.GOMAXPROCS(0).
	Workers int
	// PureGo skips OpenBLAS even when it loads (tests of the fallback).
	PureGo bool
}

// CPU is the "cpu" backend: every op is spread over Workers goroutines
// (items handed out dynamically, reductions combined in a fixed order so
// results do not depend on scheduling), GEMM tiles run on OpenBLAS's
// single-threaded sgemm when libopenblas.so.0 loads and on gonum's pure-Go
// kernel otherwise. After the first call with a given shape, ops allocate
// nothing. Not safe for concurrent use; Close stops its goroutines (they
// are also stopped when the CPU value is garbage collected).
type CPU struct {
	pool *pool
	kern sgemmKernel

	attnScratch [][]float32 // per worker: two [Nq,Nk] score matrices
	partials    []float64   // per chunk, for deterministic reductions

	gemm      gemmJob
	gemmBatch gemmBatchJob
	colSum    colSumJob
	ln        layerNormJob
	mod       modulateJob
	gate      gatedResidualJob
	elem      elementwiseJob
	attn      attentionJob
	patch     patchJob
	mse       mseJob
}

var (
	_ Backend = (*CPU)(nil)
	_ Closer  = (*CPU)(nil)
)

func init() {
	Register("cpu", func() (Backend, error) { return NewCPU(CPUOptions{}), nil })
}

// NewCPU builds a CPU backend.
func NewCPU(opts CPUOptions) *CPU {
	w := opts.Workers
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	c := &CPU{pool: newPool(w), kern: goSgemm{}, attnScratch: make([][]float32, w)}
	if !opts.PureGo {
		if fn, core, err := loadOpenBLAS(); err == nil {
			ob := &openblasSgemmKernel{fn: fn, core: core, args: make([]*fortranArgs, w)}
			for i := range ob.args {
				ob.args[i] = new(fortranArgs)
			}
			c.kern = ob
		}
	}
	runtime.AddCleanup(c, func(p *pool) { p.close() }, c.pool)
	return c
}

// Name implements Backend.
func (c *CPU) Name() string { return "cpu" }

// GEMMKernel names the GEMM kernel in use: "openblas/<core>" or "go".
func (c *CPU) GEMMKernel() string { return c.kern.name() }

// Workers is the number of goroutines ops are spread over.
func (c *CPU) Workers() int { return c.pool.workers }

// Close stops the worker goroutines; the backend must not be used afterwards.
func (c *CPU) Close() error {
	c.pool.close()
	return nil
}

// smallGemm is the m·n·k below which a GEMM runs on the caller alone.
const smallGemm = 1 << 15

// Gemm implements Backend.
func (c *CPU) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	c.gemmBias(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc, nil)
}

// gemmBias is Gemm followed by C[i,:] += bias (bias may be nil), fused per
// tile so the bias is added while the tile is in cache.
func (c *CPU) gemmBias(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int, bias []float32) {
	if m == 0 || n == 0 {
		return
	}
	j := &c.gemm
	*j = gemmJob{kern: c.kern, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: a, b: b, c: cc, lda: lda, ldb: ldb, ldc: ldc, bias: bias}
	w := c.pool.workers
	if w == 1 || m*n*k < smallGemm {
		j.byRows, j.tile = true, m
		j.run(0, 0, 1)
		*j = gemmJob{}
		return
	}
	// Split the longer side of C into about two tiles per worker (dynamic
	// hand-out evens out a busy core), in multiples of 16.
	dim := n
	j.byRows = m >= n
	if j.byRows {
		dim = m
	}
	tiles := 2 * w
	if dim < tiles*32 {
		tiles = w
	}
	j.tile = (dim + tiles - 1) / tiles
	j.tile = (j.tile + 15) &^ 15
	c.pool.do(j, (dim+j.tile-1)/j.tile, 1)
	*j = gemmJob{}
}

// GemmBatched implements Backend.
func (c *CPU) GemmBatched(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, cc []float32, ldc, strideC int, batch int) {
	if batch < c.pool.workers {
		for i := 0; i < batch; i++ {
			c.Gemm(transA, transB, m, n, k, alpha, a[i*strideA:], lda, b[i*strideB:], ldb, beta, cc[i*strideC:], ldc)
		}
		return
	}
	j := &c.gemmBatch
	*j = gemmBatchJob{kern: c.kern, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: a, b: b, c: cc, lda: lda, ldb: ldb, ldc: ldc, strideA: strideA, strideB: strideB, strideC: strideC}
	c.pool.do(j, batch, 1)
	*j = gemmBatchJob{}
}

// LinearForward implements Backend.
func (c *CPU) LinearForward(out, in, weight, bias []float32, rows, inDim, outDim int) {
	c.gemmBias(false, true, rows, outDim, inDim, 1, in, inDim, weight, inDim, 0, out, outDim, bias)
}

// LinearBackward implements Backend.
func (c *CPU) LinearBackward(din, dweight, dbias, dout, in, weight []float32, rows, inDim, outDim int) {
	if din != nil {
		c.Gemm(false, false, rows, inDim, outDim, 1, dout, outDim, weight, inDim, 1, din, inDim)
	}
	c.Gemm(true, false, outDim, inDim, rows, 1, dout, outDim, in, inDim, 1, dweight, inDim)
	if dbias != nil {
		j := &c.colSum
		*j = colSumJob{dst: dbias, src: dout, rows: rows, cols: outDim}
		c.pool.do(j, (outDim+colChunk-1)/colChunk, 1)
		*j = colSumJob{}
	}
}

// colChunk is the column block of the column-reduction jobs.
const colChunk = 64

// colSumJob: dst[j] += Σ_i src[i,j], over column blocks.
type colSumJob struct {
	dst, src   []float32
	rows, cols int
}

func (j *colSumJob) run(_, lo, hi int) {
	for blk := lo; blk < hi; blk++ {
		c0 := blk * colChunk
		c1 := min(c0+colChunk, j.cols)
		var acc [colChunk]float32
		a := acc[:c1-c0]
		for i := 0; i < j.rows; i++ {
			row := j.src[i*j.cols+c0 : i*j.cols+c1]
			for k, v := range row {
				a[k] += v
			}
		}
		d := j.dst[c0:c1]
		for k := range d {
			d[k] += a[k]
		}
	}
}

// rowGrain picks how many rows of width cols make one work chunk (~16k elements).
func rowGrain(cols int) int { return max(1, 16384/max(cols, 1)) }

// LayerNormForward implements Backend.
func (c *CPU) LayerNormForward(out, mean, rstd, in []float32, rows, cols int) {
	j := &c.ln
	*j = layerNormJob{out: out, mean: mean, rstd: rstd, in: in, cols: cols}
	c.pool.do(j, rows, rowGrain(cols))
	*j = layerNormJob{}
}

// LayerNormBackward implements Backend.
func (c *CPU) LayerNormBackward(din, dout, out, rstd []float32, rows, cols int) {
	j := &c.ln
	*j = layerNormJob{backward: true, out: din, dout: dout, rstd: rstd, in: out, cols: cols}
	c.pool.do(j, rows, rowGrain(cols))
	*j = layerNormJob{}
}

type layerNormJob struct {
	backward                  bool
	out, dout, mean, rstd, in []float32 // backward: out is din, in is forward's output
	cols                      int
}

func (j *layerNormJob) run(_, lo, hi int) {
	n := j.cols
	for i := lo; i < hi; i++ {
		x := j.in[i*n : (i+1)*n]
		o := j.out[i*n : (i+1)*n]
		if !j.backward {
			var s float64
			for _, v := range x {
				s += float64(v)
			}
			m := s / float64(n)
			var vs float64
			for _, v := range x {
				d := float64(v) - m
				vs += d * d
			}
			r := 1 / math.Sqrt(vs/float64(n)+LayerNormEps)
			mf, rf := float32(m), float32(r)
			for k, v := range x {
				o[k] = (v - mf) * rf
			}
			j.mean[i], j.rstd[i] = mf, rf
			continue
		}
		dy := j.dout[i*n : (i+1)*n]
		rf := j.rstd[i]
		var sDy, sDyX float32
		for k, xhat := range x {
			sDy += dy[k]
			sDyX += dy[k] * xhat
		}
		sDy /= float32(n)
		sDyX /= float32(n)
		for k, xhat := range x {
			o[k] += rf * (dy[k] - sDy - xhat*sDyX)
		}
	}
}

// ModulateForward implements Backend.
func (c *CPU) ModulateForward(out, in, shift, scale []float32, B, N, D, modStride int) {
	j := &c.mod
	*j = modulateJob{out: out, in: in, shift: shift, scale: scale, N: N, D: D, stride: modStride}
	c.pool.do(j, B*N, rowGrain(D))
	*j = modulateJob{}
}

// ModulateBackward implements Backend.
func (c *CPU) ModulateBackward(din, dshift, dscale, dout, in, scale []float32, B, N, D, modStride int) {
	j := &c.mod
	*j = modulateJob{backward: true, out: din, dshift: dshift, dscale: dscale, dout: dout, in: in, scale: scale, N: N, D: D, stride: modStride}
	blocks := (D + colChunk - 1) / colChunk
	c.pool.do(j, B*blocks, 1)
	*j = modulateJob{}
}

type modulateJob struct {
	backward                                    bool
	out, in, shift, scale, dshift, dscale, dout []float32 // out is din when backward
	N, D, stride                                int
}

func (j *modulateJob) run(_, lo, hi int) {
	D := j.D
	if !j.backward {
		for r := lo; r < hi; r++ {
			b := r / j.N
			sh := j.shift[b*j.stride : b*j.stride+D]
			sc := j.scale[b*j.stride : b*j.stride+D]
			x := j.in[r*D : (r+1)*D]
			o := j.out[r*D : (r+1)*D]
			for k, v := range x {
				o[k] = v*(1+sc[k]) + sh[k]
			}
		}
		return
	}
	blocks := (D + colChunk - 1) / colChunk
	for it := lo; it < hi; it++ {
		b, blk := it/blocks, it%blocks
		c0 := blk * colChunk
		c1 := min(c0+colChunk, D)
		var accShift, accScale, onePlus [colChunk]float32
		sc := j.scale[b*j.stride+c0 : b*j.stride+c1]
		for k, s := range sc {
			onePlus[k] = 1 + s
		}
		for n := 0; n < j.N; n++ {
			base := (b*j.N+n)*D + c0
			dy := j.dout[base : base+c1-c0]
			x := j.in[base : base+c1-c0]
			dx := j.out[base : base+c1-c0]
			for k, g := range dy {
				accShift[k] += g
				accScale[k] += g * x[k]
				dx[k] += g * onePlus[k]
			}
		}
		ds := j.dshift[b*j.stride+c0 : b*j.stride+c1]
		dc := j.dscale[b*j.stride+c0 : b*j.stride+c1]
		for k := range ds {
			ds[k] += accShift[k]
			dc[k] += accScale[k]
		}
	}
}

// GatedResidualForward implements Backend.
func (c *CPU) GatedResidualForward(h, y, gate []float32, B, N, D, gateStride int) {
	j := &c.gate
	*j = gatedResidualJob{h: h, y: y, gate: gate, N: N, D: D, stride: gateStride}
	c.pool.do(j, B*N, rowGrain(D))
	*j = gatedResidualJob{}
}

// GatedResidualBackward implements Backend.
func (c *CPU) GatedResidualBackward(dy, dgate, dh, y, gate []float32, B, N, D, gateStride int) {
	j := &c.gate
	*j = gatedResidualJob{backward: true, dy: dy, dgate: dgate, dh: dh, y: y, gate: gate, N: N, D: D, stride: gateStride}
	blocks := (D + colChunk - 1) / colChunk
	c.pool.do(j, B*blocks, 1)
	*j = gatedResidualJob{}
}

type gatedResidualJob struct {
	backward                  bool
	h, y, gate, dy, dgate, dh []float32
	N, D, stride              int
}

func (j *gatedResidualJob) run(_, lo, hi int) {
	D := j.D
	if !j.backward {
		for r := lo; r < hi; r++ {
			b := r / j.N
			g := j.gate[b*j.stride : b*j.stride+D]
			y := j.y[r*D : (r+1)*D]
			h := j.h[r*D : (r+1)*D]
			for k, v := range y {
				h[k] += g[k] * v
			}
		}
		return
	}
	blocks := (D + colChunk - 1) / colChunk
	for it := lo; it < hi; it++ {
		b, blk := it/blocks, it%blocks
		c0 := blk * colChunk
		c1 := min(c0+colChunk, D)
		var acc [colChunk]float32
		g := j.gate[b*j.stride+c0 : b*j.stride+c1]
		for n := 0; n < j.N; n++ {
			base := (b*j.N+n)*D + c0
			dh := j.dh[base : base+c1-c0]
			y := j.y[base : base+c1-c0]
			dy := j.dy[base : base+c1-c0]
			for k, d := range dh {
				acc[k] += d * y[k]
				dy[k] += d * g[k]
			}
		}
		dg := j.dgate[b*j.stride+c0 : b*j.stride+c1]
		for k := range dg {
			dg[k] += acc[k]
		}
	}
}

// elementwise op kinds.
const (
	opResidualFwd = iota + 1
	opResidualBwd
	opGELUFwd
	opGELUBwd
	opSiLUFwd
	opSiLUBwd
	opMSEBwd
)

// elemGrain is the chunk of elementwise ops.
const elemGrain = 8192

type elementwiseJob struct {
	op           int
	out, a, b, c []float32
	f            float32
}

// ResidualForward implements Backend.
func (c *CPU) ResidualForward(out, in1, in2 []float32, n int) {
	c.elementwise(opResidualFwd, out, in1, in2, nil, 0, n)
}

// ResidualBackward implements Backend.
func (c *CPU) ResidualBackward(din1, din2, dout []float32, n int) {
	c.elementwise(opResidualBwd, din1, din2, dout, nil, 0, n)
}

// GELUForward implements Backend.
func (c *CPU) GELUForward(out, in []float32, n int) {
	c.elementwise(opGELUFwd, out, in, nil, nil, 0, n)
}

// GELUBackward implements Backend.
func (c *CPU) GELUBackward(din, dout, in []float32, n int) {
	c.elementwise(opGELUBwd, din, dout, in, nil, 0, n)
}

// SiLUForward implements Backend.
func (c *CPU) SiLUForward(out, in []float32, n int) {
	c.elementwise(opSiLUFwd, out, in, nil, nil, 0, n)
}

// SiLUBackward implements Backend.
func (c *CPU) SiLUBackward(din, dout, in []float32, n int) {
	c.elementwise(opSiLUBwd, din, dout, in, nil, 0, n)
}

// MSEBackward implements Backend.
func (c *CPU) MSEBackward(dpred, pred, target []float32, n int, scale float32) {
	c.elementwise(opMSEBwd, dpred, pred, target, nil, 2*scale/float32(n), n)
}

func (c *CPU) elementwise(op int, out, a, b, cc []float32, f float32, n int) {
	j := &c.elem
	*j = elementwiseJob{op: op, out: out, a: a, b: b, c: cc, f: f}
	c.pool.do(j, n, elemGrain)
	*j = elementwiseJob{}
}

func (j *elementwiseJob) run(_, lo, hi int) {
	switch j.op {
	case opResidualFwd:
		o, a, b := j.out[lo:hi], j.a[lo:hi], j.b[lo:hi]
		for i := range o {
			o[i] = a[i] + b[i]
		}
	case opResidualBwd:
		d := j.b[lo:hi]
		for _, dst := range [2][]float32{j.out, j.a} {
			if dst == nil {
				continue
			}
			dst = dst[lo:hi]
			for i := range dst {
				dst[i] += d[i]
			}
		}
	case opGELUFwd:
		geluSlice(j.out[lo:hi], j.a[lo:hi])
	case opGELUBwd:
		geluGradAccSlice(j.out[lo:hi], j.a[lo:hi], j.b[lo:hi])
	case opSiLUFwd:
		o, x := j.out[lo:hi], j.a[lo:hi]
		for i, v := range x {
			o[i] = v * sigmoid32(v)
		}
	case opSiLUBwd:
		dx, dy, x := j.out[lo:hi], j.a[lo:hi], j.b[lo:hi]
		for i, v := range x {
			s := sigmoid32(v)
			dx[i] += dy[i] * s * (1 + v*(1-s))
		}
	case opMSEBwd:
		d, p, t := j.out[lo:hi], j.a[lo:hi], j.b[lo:hi]
		for i := range d {
			d[i] += j.f * (p[i] - t[i])
		}
	}
}

// geluC is sqrt(2/pi) in float32.
const geluC = float32(0.7978845608028654)

// mseGrain is the fixed chunk of the MSE reduction; fixed so the partial
// sums, combined in chunk order, do not depend on the worker count.
const mseGrain = 16384

type mseJob struct {
	pred, target []float32
	partials     []float64
}

func (j *mseJob) run(_, lo, hi int) {
	for ch := lo; ch < hi; ch++ {
		e0 := ch * mseGrain
		e1 := min(e0+mseGrain, len(j.pred))
		var s float64
		for i := e0; i < e1; i++ {
			d := float64(j.pred[i]) - float64(j.target[i])
			s += d * d
		}
		j.partials[ch] = s
	}
}

// MSEForward implements Backend.
func (c *CPU) MSEForward(pred, target []float32, n int) float64 {
	chunks := (n + mseGrain - 1) / mseGrain
	if len(c.partials) < chunks {
		c.partials = make([]float64, chunks)
	}
	j := &c.mse
	*j = mseJob{pred: pred[:n], target: target[:n], partials: c.partials}
	c.pool.do(j, chunks, 1)
	*j = mseJob{}
	var s float64
	for _, p := range c.partials[:chunks] {
		s += p
	}
	return s / float64(n)
}

// PatchifyForward implements Backend.
func (c *CPU) PatchifyForward(out, x []float32, d PatchDims) { c.patchify(false, false, out, x, d) }

// PatchifyBackward implements Backend.
func (c *CPU) PatchifyBackward(dx, dout []float32, d PatchDims) { c.patchify(false, true, dx, dout, d) }

// UnpatchifyForward implements Backend.
func (c *CPU) UnpatchifyForward(out, o []float32, d PatchDims) { c.patchify(true, false, out, o, d) }

// UnpatchifyBackward implements Backend.
func (c *CPU) UnpatchifyBackward(do, dout []float32, d PatchDims) {
	c.patchify(true, true, do, dout, d)
}

func (c *CPU) patchify(unpatch, backward bool, dst, src []float32, d PatchDims) {
	j := &c.patch
	*j = patchJob{unpatch: unpatch, backward: backward, dst: dst, src: src, d: d}
	c.pool.do(j, d.B*d.Tokens(), max(1, 4096/d.PatchLen()))
	*j = patchJob{}
}

// patchJob moves one token's patch per item between latent layout [B,C,F,H,W]
// and token layout [B,N,K]. Each latent element belongs to exactly one
// token, so items never write the same element.
type patchJob struct {
	unpatch, backward bool
	dst, src          []float32
	d                 PatchDims
}

func (j *patchJob) run(_, lo, hi int) {
	d := j.d
	hp, wp := d.H/d.P, d.W/d.P
	N, K := d.Tokens(), d.PatchLen()
	for tok := lo; tok < hi; tok++ {
		b, n := tok/N, tok%N
		fi, hi2, wi := n/(hp*wp), (n/wp)%hp, n%wp
		row := tok * K
		for c := 0; c < d.C; c++ {
			for kt := 0; kt < d.PT; kt++ {
				for kh := 0; kh < d.P; kh++ {
					lat := (((b*d.C+c)*d.F+fi*d.PT+kt)*d.H+hi2*d.P+kh)*d.W + wi*d.P
					for kw := 0; kw < d.P; kw++ {
						var k int
						if j.unpatch { // channel last inside a patch
							k = ((kt*d.P+kh)*d.P+kw)*d.C + c
						} else {
							k = ((c*d.PT+kt)*d.P+kh)*d.P + kw
						}
						switch {
						case !j.unpatch && !j.backward:
							j.dst[row+k] = j.src[lat+kw]
						case !j.unpatch && j.backward:
							j.dst[lat+kw] += j.src[row+k]
						case j.unpatch && !j.backward:
							j.dst[lat+kw] = j.src[row+k]
						default:
							j.dst[row+k] += j.src[lat+kw]
						}
					}
				}
			}
		}
	}
}
