package cuda

// The emulator's fused attention kernels: Go transcriptions of
// flash_attention.cu, function for function and line for line, run the way
// a GPU runs them. Each thread of a block is a goroutine with the .cu's
// registers as its locals; shared memory is one []float32 per block,
// poisoned with NaN so that a read of a word no thread wrote shows in the
// results; __syncthreads is a barrier over the block's goroutines, and
// __shfl_xor_sync an exchange between two barriers. Blocks run several at
// a time. Under the race detector (go test -race) a missing __syncthreads,
// or two threads or blocks writing one gradient element, is a data race
// and fails the test. A kernel that indexes past its allocation
// (fakeDevice.mem) or past its shared memory panics, and the panic is
// reported as the launch's error.

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
)

// emuBarrier is a barrier over n threads: the whole block (__syncthreads)
// or one warp (the synchronisation of __shfl_xor_sync, which orders only
// the warp's own lanes, so a missing __syncthreads stays a race).
type emuBarrier struct {
	mu      sync.Mutex
	cond    *sync.Cond
	n       int
	arrived int // threads waiting now
	gen     int // barriers completed
	exited  int
	err     error
}

func newEmuBarrier(n int) *emuBarrier {
	b := &emuBarrier{n: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// wait blocks until all n threads arrive. A thread that has returned never
// will: that is an error (a divergent barrier, undefined on a GPU).
func (b *emuBarrier) wait() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	gen := b.gen
	b.arrived++
	if b.arrived == b.n {
		b.arrived = 0
		b.gen++
		b.cond.Broadcast()
	}
	for gen == b.gen && b.err == nil {
		if b.exited > 0 {
			b.err = errors.New("barrier not reached by every thread")
			b.cond.Broadcast()
			break
		}
		b.cond.Wait()
	}
	if gen == b.gen {
		return b.err
	}
	return nil
}

// exit marks one thread as returned.
func (b *emuBarrier) exit() {
	b.mu.Lock()
	b.exited++
	b.cond.Broadcast()
	b.mu.Unlock()
}

// fail ends every wait with err.
func (b *emuBarrier) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// emuBlock is one thread block being emulated.
type emuBlock struct {
	idx   int // blockIdx.x
	smem  []float32
	shfl  [2][]float32 // __shfl_xor_sync's exchange slots, emuShflWidth per thread
	mma   [2][]float32 // mma.sync's fragment slots, emuMMAWidth per thread
	bar   *emuBarrier
	warps []*emuBarrier
}

func (b *emuBlock) barriers() []*emuBarrier { return append([]*emuBarrier{b.bar}, b.warps...) }

// fail stops the block: every thread waiting, or arriving later, at any
// of its barriers ends.
func (b *emuBlock) fail(err error) {
	for _, bar := range b.barriers() {
		bar.fail(err)
	}
}

// err is the block's first failure.
func (b *emuBlock) err() error {
	for _, bar := range b.barriers() {
		bar.mu.Lock()
		err := bar.err
		bar.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// emuThread is one thread: threadIdx.x = tid of block b.
type emuThread struct {
	b        *emuBlock
	tid      int
	shuffles int // shflXor calls so far
	mmas     int // ftMMA calls so far
}

// syncthreads is __syncthreads().
func (t *emuThread) syncthreads() { t.await(t.b.bar, "__syncthreads") }

func (t *emuThread) await(bar *emuBarrier, what string) {
	if err := bar.wait(); err != nil {
		t.b.fail(fmt.Errorf("%s: %w", what, err))
		runtime.Goexit()
	}
}

// exit marks the thread as returned.
func (t *emuThread) exit() {
	t.b.bar.exit()
	t.b.warps[t.tid/32].exit()
}

// shflXor is __shfl_xor_sync(0xffffffff, v[i], lane) for every element of
// v (the .cu's unrolled loop over rows, whose shuffles are independent):
// every lane of the warp calls it together (the .cu's shuffles are never
// divergent) and gets lane tid^lane's values. The slots are double
// buffered: a lane writes one set again only two shuffles later, after
// every lane has passed the barrier that follows its read of it.
func (t *emuThread) shflXor(v []float32, lane int) []float32 {
	if lane <= 0 || lane >= 32 || len(v) > emuShflWidth {
		panic(fmt.Sprintf("shuffle of %d values with lane mask %d", len(v), lane))
	}
	slots := t.b.shfl[t.shuffles%2]
	t.shuffles++
	copy(slots[t.tid*emuShflWidth:], v)
	t.await(t.b.warps[t.tid/32], "__shfl_xor_sync")
	src := (t.tid ^ lane) * emuShflWidth
	return slices.Clone(slots[src : src+len(v)])
}

// emuShflWidth is the most values one shflXor exchanges.
const emuShflWidth = 8

// emuBlocksAtOnce is how many blocks run concurrently.
const emuBlocksAtOnce = 2

// emuLaunch runs body for every thread of every block of a 1-D launch.
func emuLaunch(cfg launchCfg, body func(t *emuThread)) error {
	if cfg.grid.Y != 1 || cfg.grid.Z != 1 || cfg.block.Y != 1 || cfg.block.Z != 1 {
		return fmt.Errorf("emulator: only 1-D launches, got grid %v block %v", cfg.grid, cfg.block)
	}
	var errs []error
	for b0 := 0; b0 < cfg.grid.X; b0 += emuBlocksAtOnce {
		var wg sync.WaitGroup
		var blocks []*emuBlock
		for bi := b0; bi < min(cfg.grid.X, b0+emuBlocksAtOnce); bi++ {
			if cfg.block.X%32 != 0 {
				return fmt.Errorf("emulator: block of %d threads is not whole warps", cfg.block.X)
			}
			blk := &emuBlock{idx: bi, smem: make([]float32, cfg.shared/4), bar: newEmuBarrier(cfg.block.X)}
			for i := range blk.shfl {
				blk.shfl[i] = make([]float32, cfg.block.X*emuShflWidth)
				blk.mma[i] = make([]float32, cfg.block.X*emuMMAWidth)
			}
			for range cfg.block.X / 32 {
				blk.warps = append(blk.warps, newEmuBarrier(32))
			}
			for i := range blk.smem {
				blk.smem[i] = float32(math.NaN())
			}
			blocks = append(blocks, blk)
			for tid := range cfg.block.X {
				wg.Add(1)
				go func() {
					t := &emuThread{b: blk, tid: tid}
					defer wg.Done()
					defer t.exit()
					defer func() {
						if r := recover(); r != nil {
							blk.fail(fmt.Errorf("thread %d: %v", tid, r))
						}
					}()
					body(t)
				}()
			}
		}
		wg.Wait()
		for _, blk := range blocks {
			if err := blk.err(); err != nil {
				errs = append(errs, fmt.Errorf("block %d: %w", blk.idx, err))
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	return nil
}

// faArgs are the kernels' trailing arguments (heads … st).
type faArgs struct {
	heads, nq, nk, hd, qrow, krow, vrow, orow int
	scale                                     float32
	bf16                                      bool
	st                                        int // bf16 storage: bit 0 O, 1 Q, 2 K, 3 V
}

// emuFlash decodes a flash_attn_<kind>_<HDP> launch and runs its
// transcription.
func emuFlash(f *fakeDevice, name string, cfg launchCfg, args []any) error {
	cut := strings.LastIndexByte(name, '_')
	hdp, err := strconv.Atoi(name[cut+1:])
	if err != nil {
		return fmt.Errorf("emulator: %s: %w", name, err)
	}
	g := func(i int) []float32 { return f.mem(args[i].(cu.DevicePtr)) }
	var a faArgs
	if strings.Contains(name, "_tc_") { // no bf16 argument: always bf16
		tail := args[len(args)-10:]
		i32 := func(i int) int { return int(tail[i].(int32)) }
		a = faArgs{heads: i32(0), nq: i32(1), nk: i32(2), hd: i32(3), qrow: i32(4), krow: i32(5), vrow: i32(6), orow: i32(7), scale: tail[8].(float32), bf16: true, st: i32(9)}
	} else {
		tail := args[len(args)-11:]
		i32 := func(i int) int { return int(tail[i].(int32)) }
		a = faArgs{heads: i32(0), nq: i32(1), nk: i32(2), hd: i32(3), qrow: i32(4), krow: i32(5), vrow: i32(6), orow: i32(7), scale: tail[8].(float32), bf16: i32(9) != 0, st: i32(10)}
	}
	// tn is argument i as tensor k of st (bf16 when its bit is set).
	tn := func(i, k int) emuTensor { return f.tensor(args[i].(cu.DevicePtr), stBit(a.st, k)) }
	switch name[:cut] {
	case "flash_attn_forward":
		O, lse, Q, K, V, mask := tn(0, 0), g(1), tn(2, 1), tn(3, 2), tn(4, 3), g(5)
		return emuLaunch(cfg, func(t *emuThread) { faForward(t, hdp, O, lse, Q, K, V, mask, a) })
	case "flash_attn_forward_tc":
		O, lse, Q, K, V, mask := tn(0, 0), g(1), tn(2, 1), tn(3, 2), tn(4, 3), g(5)
		return emuLaunch(tcShared(cfg), func(t *emuThread) { ftForward(t, hdp, O, lse, Q, K, V, mask, a) })
	case "flash_attn_backward_dkdv_tc":
		dK, dV, dO, Q, K, V, mask, lse, D := g(0), g(1), g(2), tn(3, 1), tn(4, 2), tn(5, 3), g(6), g(7), g(8)
		return emuLaunch(tcShared(cfg), func(t *emuThread) { ftBackwardDKDV(t, hdp, dK, dV, dO, Q, K, V, mask, lse, D, a) })
	case "flash_attn_backward_dq_tc":
		dQ, dO, Q, K, V, mask, lse, D := g(0), g(1), tn(2, 1), tn(3, 2), tn(4, 3), g(5), g(6), g(7)
		return emuLaunch(tcShared(cfg), func(t *emuThread) { ftBackwardDQ(t, hdp, dQ, dO, Q, K, V, mask, lse, D, a) })
	case "flash_attn_backward_dkdv":
		dK, dV, dO, Q, K, V, mask, lse, D := g(0), g(1), g(2), tn(3, 1), tn(4, 2), tn(5, 3), g(6), g(7), g(8)
		return emuLaunch(cfg, func(t *emuThread) { faBackwardDKDV(t, hdp, dK, dV, dO, Q, K, V, mask, lse, D, a) })
	case "flash_attn_backward_dq":
		dQ, dO, Q, K, V, mask, lse, D := g(0), g(1), tn(2, 1), tn(3, 2), tn(4, 3), g(5), g(6), g(7)
		return emuLaunch(cfg, func(t *emuThread) { faBackwardDQ(t, hdp, dQ, dO, Q, K, V, mask, lse, D, a) })
	}
	return fmt.Errorf("emulator: no transcription of kernel %s", name)
}

// TestEmulatedFlashStorage: the fused kernels read Q, K and V stored as bf16
// (st bits 1, 2, 3) exactly as they read the same values stored as float32
// (Q, K and V hold bf16 values, so both storages hold the same numbers), and
// store O as bf16 (st bit 0) rounded from the float32 result. O, lse, dQ, dK
// and dV must match the st = 0 run bit for bit, at either precision, for each
// bit alone and all together; the backward gets bit 0 too, and must still
// read dO as float32. The kernels are launched directly (the host passes
// st = 0 so far), their arguments checked against the .cu's signatures; the
// fp32 st = 0 run is also checked against kernels.Reference.
func TestEmulatedFlashStorage(t *testing.T) {
	const B, H, Nq, Nk, hd = 2, 2, 70, 33, 40 // partial tiles; hd not a multiple of 16
	D := H * hd
	d := kernels.AttentionDims{B: B, Heads: H, Nq: Nq, Nk: Nk, HeadDim: hd, QRow: D + rowPad, KRow: 2*D + rowPad, VRow: 2*D + rowPad, ORow: D + rowPad, Scale: float32(1 / math.Sqrt(hd))}
	hdp := flashHeadDim(hd)
	be, f := newFakeBackend(t, false)
	f.emulate = true
	r := rand.New(rand.NewPCG(13, 14))
	draw := func(n int, scale float64, bf bool) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64() * scale)
			if bf {
				s[i] = bf16Float(bf16Bits(s[i]))
			}
		}
		return s
	}
	// put copies v to fresh device memory, as bf16 when bf (v's values
	// are bf16's there); get reads n elements back.
	put := func(v []float32, bf bool) cu.DevicePtr {
		elem := 4
		if bf {
			elem = 2
		}
		p, err := f.alloc(elem * len(v))
		if err != nil {
			t.Fatal(err)
		}
		if !bf {
			copy(f32s(p, len(v)), v)
			return p
		}
		h := u16s(p, len(v))
		for i, x := range v {
			h[i] = bf16Bits(x)
		}
		return p
	}
	get := func(p cu.DevicePtr, n int) []float32 { return slices.Clone(f32s(p, n)) }
	q, kv := draw(B*Nq*d.QRow, 1, true), draw(B*Nk*d.KRow, 1, true)
	dout := draw(B*Nq*d.ORow, 1, false)
	mask := make([]float32, B*Nk)
	for i := range mask {
		if i%4 != 1 && !(i >= Nk && i < Nk+10) { // sample 1's first 10 keys dropped
			mask[i] = 1
		}
	}
	qs := map[bool]cu.DevicePtr{false: put(q, false), true: put(q, true)}
	kvs := map[bool]cu.DevicePtr{false: put(kv, false), true: put(kv, true)}
	// qkv are Q, K and V's addresses with st's storage (V follows K in each row).
	qkv := func(st int) (Q, K, V cu.DevicePtr) {
		vbf := stBit(st, 3)
		V = kvs[vbf] + cu.DevicePtr(4*D)
		if vbf {
			V = kvs[vbf] + cu.DevicePtr(2*D)
		}
		return qs[stBit(st, 1)], kvs[stBit(st, 2)], V
	}
	pMask, pdO := put(mask, false), put(dout, false)
	launch := func(kind flashKind, bf16 bool, st int, ptrs ...cu.DevicePtr) {
		t.Helper()
		var args []any
		for _, p := range ptrs {
			args = append(args, p)
		}
		bf := int32(0)
		if bf16 {
			bf = 1
		}
		args = append(args, int32(H), int32(Nq), int32(Nk), int32(hd), int32(d.QRow), int32(d.KRow), int32(d.VRow), int32(d.ORow), d.Scale, bf, int32(st))
		name := kind.kernel(hdp)
		if err := checkArgs(name, be.sigs[name], args); err != nil {
			t.Fatal(err)
		}
		if err := emuFlash(f, name, flashCfg(kind, d, hdp), args); err != nil {
			t.Fatalf("%s, st %#b: %v", name, st, err)
		}
	}
	same := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s: [%d] = %v, %v with float32 storage", what, i, got[i], want[i])
				return
			}
		}
	}
	nO, nL := B*Nq*d.ORow, B*H*Nq
	oStart := make([]float32, nO) // NaN heads (every one must be written), sentinel padding
	for i := range oStart {
		oStart[i] = sentinel
		if i%d.ORow < D {
			oStart[i] = float32(math.NaN())
		}
	}
	nan := make([]float32, nL)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	for _, bf16 := range []bool{false, true} {
		// Forward: st 0 first, the one every other st is compared with.
		var wantO, wantL []float32
		for _, st := range []int{0, 0b0010, 0b0100, 0b1000, 0b1110, 0b0001, 0b1111} {
			what := fmt.Sprintf("bf16 %v, st %#04b", bf16, st)
			Q, K, V := qkv(st)
			O, lse := put(oStart, stBit(st, 0)), put(nan, false)
			launch(flashForward, bf16, st, O, lse, Q, K, V, pMask)
			gotL := get(lse, nL)
			if st == 0 {
				wantO, wantL = get(O, nO), gotL
				for i, v := range wantO {
					if math.IsNaN(float64(v)) || i%d.ORow >= D && v != sentinel {
						t.Fatalf("%s: O[%d] = %v", what, i, v)
					}
				}
				if !bf16 { // the launch is the backend's: it computes attention
					refO, refL := slices.Clone(oStart), make([]float32, nL)
					kernels.Reference{}.AttentionForward(refO, refL, q, kv, kv[D:], mask, d)
					if e := kernelstest.RelErr(heads(wantO, B*Nq, d.ORow, D), heads(refO, B*Nq, d.ORow, D)); !(e <= kernelstest.Tol) {
						t.Errorf("%s: O relative error %.3g vs kernels.Reference", what, e)
					}
					if e := kernelstest.RelErr(wantL, refL); !(e <= kernelstest.Tol) {
						t.Errorf("%s: lse relative error %.3g vs kernels.Reference", what, e)
					}
				}
			} else if stBit(st, 0) {
				for i, h := range u16s(O, nO) {
					if h != bf16Bits(wantO[i]) {
						t.Errorf("%s: bf16 O[%d] = %#04x, want %#04x (%v rounded)", what, i, h, bf16Bits(wantO[i]), wantO[i])
						break
					}
				}
			} else {
				same(what+": O", get(O, nO), wantO)
			}
			same(what+": lse", gotL, wantL)
		}
		// Backward from that forward: D = rowsum(dO∘O) (attn_rowdot's),
		// gradients added to random starting values.
		rowD := make([]float32, nL)
		for i := range rowD {
			b, h, row := i/(H*Nq), i/Nq%H, i%Nq
			base := (b*Nq+row)*d.ORow + h*hd
			for c := range hd {
				rowD[i] += dout[base+c] * wantO[base+c]
			}
		}
		pL, pD := put(wantL, false), put(rowD, false)
		dq0, dkv0 := draw(B*Nq*d.QRow, 0.1, false), draw(B*Nk*d.KRow, 0.1, false)
		var wantDQ, wantDKV []float32
		for _, st := range []int{0, 0b0010, 0b0100, 0b1000, 0b1111} {
			what := fmt.Sprintf("bf16 %v, st %#04b", bf16, st)
			Q, K, V := qkv(st)
			dQ, dKV := put(dq0, false), put(dkv0, false)
			launch(flashDKDV, bf16, st, dKV, dKV+cu.DevicePtr(4*D), pdO, Q, K, V, pMask, pL, pD)
			launch(flashDQ, bf16, st, dQ, pdO, Q, K, V, pMask, pL, pD)
			gotDQ, gotDKV := get(dQ, len(dq0)), get(dKV, len(dkv0))
			if st != 0 {
				same(what+": dQ", gotDQ, wantDQ)
				same(what+": dK, dV", gotDKV, wantDKV)
				continue
			}
			wantDQ, wantDKV = gotDQ, gotDKV
			if bf16 {
				continue
			}
			refDQ, refDKV := slices.Clone(dq0), slices.Clone(dkv0)
			kernels.Reference{}.AttentionBackward(refDQ, refDKV, refDKV[D:], dout, q, kv, kv[D:], mask, wantO, wantL, d)
			gq, wq := delta(gotDQ, dq0), delta(refDQ, dq0)
			gkv, wkv := delta(gotDKV, dkv0), delta(refDKV, dkv0)
			for _, c := range []struct {
				name     string
				got, ref []float32
			}{
				{"dQ", heads(gq, B*Nq, d.QRow, D), heads(wq, B*Nq, d.QRow, D)},
				{"dK", heads(gkv, B*Nk, d.KRow, D), heads(wkv, B*Nk, d.KRow, D)},
				{"dV", heads(gkv[D:], B*Nk, d.KRow, D), heads(wkv[D:], B*Nk, d.KRow, D)},
			} {
				if e := kernelstest.RelErr(c.got, c.ref); !(e <= kernelstest.Tol) {
					t.Errorf("%s: %s relative error %.3g vs kernels.Reference", what, c.name, e)
				}
			}
		}
	}
}

// tcShared gives a tensor-core kernel's emulation one float32 slot per
// bf16 element of its shared tiles (and per float after them).
func tcShared(cfg launchCfg) launchCfg {
	cfg.shared *= 2
	return cfg
}

// From here on, flash_attention.cu in Go, in its order. Template
// parameters are arguments; register arrays are slices.

var faInf = float32(math.Inf(1))

func expf(x float32) float32       { return float32(math.Exp(float64(x))) }
func logf(x float32) float32       { return float32(math.Log(float64(x))) }
func fmaf(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }
func fmaxf(a, b float32) float32   { return max(a, b) }
func faRound(v float32, bf16 bool) float32 {
	if bf16 {
		return bf16Float(bf16Bits(v))
	}
	return v
}

func grid2(rows, cols int) [][]float32 {
	m := make([][]float32, rows)
	for i := range m {
		m[i] = make([]float32, cols)
	}
	return m
}

// faLoadTile is fa_load_tile (src's view carries its sbf).
func faLoadTile(t *emuThread, hdp int, tile []float32, rows int, src emuTensor, base, row0, n, hd, rowStride int, bf16 bool) {
	for idx := t.tid; idx < rows*hdp; idx += flashThreads {
		r, c := idx/hdp, idx%hdp
		v := float32(0)
		if row0+r < n && c < hd {
			v = faRound(src.ld(base+(row0+r)*rowStride+c), bf16)
		}
		tile[r*(hdp+1)+c] = v
	}
}

// faLoadRowStats is fa_load_row_stats.
func faLoadRowStats(t *emuThread, sL, sD, lse, D []float32, rowBase, row0, nq int) {
	for r := t.tid; r < flashBR; r += flashThreads {
		in := row0+r < nq
		sL[r], sD[r] = faInf, 0
		if in {
			sL[r], sD[r] = lse[rowBase+row0+r], D[rowBase+row0+r]
		}
	}
}

// faKeep is fa_keep (mk nil: no mask).
func faKeep(mk []float32, j, nk int) bool { return j < nk && (mk == nil || mk[j] != 0) }

// faScoreMM is fa_score_mm.
func faScoreMM(hdp, rm, cm, tx0, ty0 int, acc [][]float32, A, B []float32, tx, ty int) {
	ld := hdp + 1
	for i := range rm {
		for j := range cm {
			acc[i][j] = 0
		}
	}
	a, b := make([]float32, rm), make([]float32, cm)
	for c := range hdp {
		for i := range rm {
			a[i] = A[(ty+ty0*i)*ld+c]
		}
		for j := range cm {
			b[j] = B[(tx+tx0*j)*ld+c]
		}
		for i := range rm {
			for j := range cm {
				acc[i][j] = fmaf(a[i], b[j], acc[i][j])
			}
		}
	}
}

// faValueMM is fa_value_mm (K the weights' columns; TX, TY as in the .cu).
func faValueMM(hdp, k, rm, TX, TY int, acc [][]float32, W, X []float32, tx, ty int) {
	ld, wld, dm := hdp+1, k+1, hdp/TX
	w, x := make([]float32, rm), make([]float32, dm)
	for j := range k {
		for i := range rm {
			w[i] = W[(ty+TY*i)*wld+j]
		}
		for d := range dm {
			x[d] = X[j*ld+tx+TX*d]
		}
		for i := range rm {
			for d := range dm {
				acc[i][d] = fmaf(w[i], x[d], acc[i][d])
			}
		}
	}
}

// faForward is fa_forward.
func faForward(t *emuThread, hdp int, O emuTensor, lse []float32, Q, K, V emuTensor, mask []float32, a faArgs) {
	BR, BC, LD, PLD := flashBR, flashBCFwd, hdp+1, flashBCFwd+1
	TX := 16
	TY := flashThreads / TX
	RM, CM, DM := BR/TY, BC/TX, hdp/TX
	sQ := t.b.smem
	sK := sQ[BR*LD:]
	sV := sK[BC*LD:]
	sP := sV[BC*LD:]
	tiles := (a.nq + BR - 1) / BR
	tile, bh := t.b.idx%tiles, t.b.idx/tiles
	b, h := bh/a.heads, bh%a.heads
	q0 := tile * BR
	tx, ty := t.tid%TX, t.tid/TX
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	faLoadTile(t, hdp, sQ, BR, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow, a.bf16)
	m, l, acc := make([]float32, RM), make([]float32, RM), grid2(RM, DM)
	for i := range RM {
		m[i] = -faInf
		l[i] = 0
	}
	for k0 := 0; k0 < a.nk; k0 += BC {
		t.syncthreads()
		faLoadTile(t, hdp, sK, BC, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow, a.bf16)
		faLoadTile(t, hdp, sV, BC, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow, a.bf16)
		t.syncthreads()
		s := grid2(RM, CM)
		faScoreMM(hdp, RM, CM, TX, TY, s, sQ, sK, tx, ty)
		keep := make([]bool, CM)
		for j := range CM {
			keep[j] = faKeep(mk, k0+tx+TX*j, a.nk)
		}
		mx, sum := make([]float32, RM), make([]float32, RM)
		for i := range RM {
			mx[i] = -faInf
			for j := range CM {
				if keep[j] {
					s[i][j] *= a.scale
				} else {
					s[i][j] = -faInf
				}
				mx[i] = fmaxf(mx[i], s[i][j])
			}
		}
		for o := TX / 2; o > 0; o >>= 1 {
			sh := t.shflXor(mx, o)
			for i := range RM {
				mx[i] = fmaxf(mx[i], sh[i])
			}
		}
		for i := range RM {
			mnew := fmaxf(m[i], mx[i])
			alpha := float32(0)
			if m[i] != -faInf {
				alpha = expf(m[i] - mnew)
			}
			sum[i] = 0
			for j := range CM {
				p := float32(0)
				if s[i][j] != -faInf {
					p = expf(s[i][j] - mnew)
				}
				sum[i] += p
				sP[(ty+TY*i)*PLD+tx+TX*j] = faRound(p, a.bf16)
			}
			m[i] = mnew
			l[i] *= alpha
			for d := range DM {
				acc[i][d] *= alpha
			}
		}
		for o := TX / 2; o > 0; o >>= 1 {
			sh := t.shflXor(sum, o)
			for i := range RM {
				sum[i] += sh[i]
			}
		}
		for i := range RM {
			l[i] += sum[i]
		}
		t.syncthreads()
		faValueMM(hdp, BC, RM, TX, TY, acc, sP, sV, tx, ty)
	}
	rowBase := bh * a.nq
	for i := range RM {
		row := q0 + ty + TY*i
		if row >= a.nq {
			continue
		}
		none := m[i] == -faInf
		inv := float32(0)
		if !none {
			inv = 1 / l[i]
		}
		o := (b*a.nq+row)*a.orow + h*a.hd
		for d := range DM {
			if tx+TX*d < a.hd {
				O.st(o+tx+TX*d, acc[i][d]*inv)
			}
		}
		if tx == 0 {
			if none {
				lse[rowBase+row] = faInf
			} else {
				lse[rowBase+row] = m[i] + logf(l[i])
			}
		}
	}
}

// faBwdTile is fa_bwd_tile.
func faBwdTile(hdp int, p, ds [][]float32, sQ, sdO, sK, sV, sL, sD []float32, keep []bool, scale float32, tx, ty int) {
	faScoreMM(hdp, 4, 4, 8, 16, p, sQ, sK, tx, ty)
	faScoreMM(hdp, 4, 4, 8, 16, ds, sdO, sV, tx, ty)
	for i := range 4 {
		l, D := sL[ty+16*i], sD[ty+16*i]
		for j := range 4 {
			if l == faInf || !keep[j] {
				p[i][j] = 0
			} else {
				p[i][j] = expf(p[i][j]*scale - l)
			}
			ds[i][j] = p[i][j] * (ds[i][j] - D) * scale
		}
	}
}

// faBackwardDKDV is fa_backward_dkdv.
func faBackwardDKDV(t *emuThread, hdp int, dK, dV, dO []float32, Q, K, V emuTensor, mask, lse, D []float32, a faArgs) {
	BR, BC, LD, PLD, DM := flashBR, flashBCBwd, hdp+1, flashBCBwd+1, hdp/16
	sK := t.b.smem
	sV := sK[BC*LD:]
	sQ := sV[BC*LD:]
	sdO := sQ[BR*LD:]
	sP := sdO[BR*LD:]
	sdS := sP[BR*PLD:]
	sL := sdS[BR*PLD:]
	sD := sL[BR:]
	tiles := (a.nk + BC - 1) / BC
	tile, bh := t.b.idx%tiles, t.b.idx/tiles
	b, h := bh/a.heads, bh%a.heads
	k0 := tile * BC
	tx, ty := t.tid%8, t.tid/8
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	faLoadTile(t, hdp, sK, BC, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow, a.bf16)
	faLoadTile(t, hdp, sV, BC, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow, a.bf16)
	keep := make([]bool, 4)
	for j := range 4 {
		keep[j] = faKeep(mk, k0+tx+8*j, a.nk)
	}
	dk, dv := grid2(4, DM), grid2(4, DM)
	rowBase := bh * a.nq
	for q0 := 0; q0 < a.nq; q0 += BR {
		t.syncthreads()
		faLoadTile(t, hdp, sQ, BR, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow, a.bf16)
		faLoadTile(t, hdp, sdO, BR, emuTensor{f: dO}, b*a.nq*a.orow+h*a.hd, q0, a.nq, a.hd, a.orow, a.bf16)
		faLoadRowStats(t, sL, sD, lse, D, rowBase, q0, a.nq)
		t.syncthreads()
		p, ds := grid2(4, 4), grid2(4, 4)
		faBwdTile(hdp, p, ds, sQ, sdO, sK, sV, sL, sD, keep, a.scale, tx, ty)
		for i := range 4 {
			for j := range 4 {
				sP[(ty+16*i)*PLD+tx+8*j] = faRound(p[i][j], a.bf16)
				sdS[(ty+16*i)*PLD+tx+8*j] = faRound(ds[i][j], a.bf16)
			}
		}
		t.syncthreads()
		pr, dsr, o, q := make([]float32, 4), make([]float32, 4), make([]float32, DM), make([]float32, DM)
		for r := range BR {
			for x := range 4 {
				pr[x] = sP[r*PLD+tx+8*x]
				dsr[x] = sdS[r*PLD+tx+8*x]
			}
			for c := range DM {
				o[c] = sdO[r*LD+ty+16*c]
				q[c] = sQ[r*LD+ty+16*c]
			}
			for x := range 4 {
				for c := range DM {
					dv[x][c] = fmaf(pr[x], o[c], dv[x][c])
					dk[x][c] = fmaf(dsr[x], q[c], dk[x][c])
				}
			}
		}
	}
	for x := range 4 {
		key := k0 + tx + 8*x
		if key >= a.nk {
			continue
		}
		for c := range DM {
			col := ty + 16*c
			if col >= a.hd {
				continue
			}
			if dK != nil {
				dK[(b*a.nk+key)*a.krow+h*a.hd+col] += dk[x][c]
			}
			if dV != nil {
				dV[(b*a.nk+key)*a.vrow+h*a.hd+col] += dv[x][c]
			}
		}
	}
}

// faBackwardDQ is fa_backward_dq.
func faBackwardDQ(t *emuThread, hdp int, dQ, dO []float32, Q, K, V emuTensor, mask, lse, D []float32, a faArgs) {
	BR, BC, LD, PLD, DM := flashBR, flashBCBwd, hdp+1, flashBCBwd+1, hdp/16
	sQ := t.b.smem
	sdO := sQ[BR*LD:]
	sK := sdO[BR*LD:]
	sV := sK[BC*LD:]
	sdS := sV[BC*LD:]
	sL := sdS[BR*PLD:]
	sD := sL[BR:]
	tiles := (a.nq + BR - 1) / BR
	tile, bh := t.b.idx%tiles, t.b.idx/tiles
	b, h := bh/a.heads, bh%a.heads
	q0 := tile * BR
	tx, ty := t.tid%8, t.tid/8
	ax, ay := t.tid%16, t.tid/16
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	rowBase := bh * a.nq
	faLoadTile(t, hdp, sQ, BR, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow, a.bf16)
	faLoadTile(t, hdp, sdO, BR, emuTensor{f: dO}, b*a.nq*a.orow+h*a.hd, q0, a.nq, a.hd, a.orow, a.bf16)
	faLoadRowStats(t, sL, sD, lse, D, rowBase, q0, a.nq)
	dq := grid2(8, DM)
	for k0 := 0; k0 < a.nk; k0 += BC {
		t.syncthreads()
		faLoadTile(t, hdp, sK, BC, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow, a.bf16)
		faLoadTile(t, hdp, sV, BC, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow, a.bf16)
		t.syncthreads()
		keep := make([]bool, 4)
		for j := range 4 {
			keep[j] = faKeep(mk, k0+tx+8*j, a.nk)
		}
		p, ds := grid2(4, 4), grid2(4, 4)
		faBwdTile(hdp, p, ds, sQ, sdO, sK, sV, sL, sD, keep, a.scale, tx, ty)
		for i := range 4 {
			for j := range 4 {
				sdS[(ty+16*i)*PLD+tx+8*j] = faRound(ds[i][j], a.bf16)
			}
		}
		t.syncthreads()
		faValueMM(hdp, BC, 8, 16, 8, dq, sdS, sK, ax, ay)
	}
	for i := range 8 {
		row := q0 + ay + 8*i
		if row >= a.nq {
			continue
		}
		g := dQ[(b*a.nq+row)*a.qrow+h*a.hd:]
		for d := range DM {
			if ax+16*d < a.hd {
				g[ax+16*d] += dq[i][d]
			}
		}
	}
}
