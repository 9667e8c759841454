package cuda

import (
	"fmt"
	"regexp"
	"strings"

	cu "github.com/fmtrain/fmtrain/cuda"
	"github.com/fmtrain/fmtrain/kernels"
)

// argKind is the kind of one kernel parameter.
type argKind int

const (
	argPtr   argKind = 1 + iota // any T* (a cu.DevicePtr)
	argInt                      // int (int32)
	argInt64                    // long long (int64)
	argFloat                    // float (float32)
)

func (k argKind) String() string {
	return [...]string{"?", "pointer", "int", "long long", "float"}[k]
}

var kernelRE = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// parseKernels reads every extern "C" kernel's parameter kinds from the
// program source: the one description of the kernels' signatures, used to
// check each launch's arguments before cuLaunchKernel sees them.
func parseKernels(src string) (map[string][]argKind, error) {
	out := map[string][]argKind{}
	for _, m := range kernelRE.FindAllStringSubmatch(src, -1) {
		name := m[1]
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("kernels/cuda: kernel %s defined twice", name)
		}
		var kinds []argKind
		for _, p := range strings.Split(m[2], ",") {
			p = strings.Join(strings.Fields(p), " ")
			switch {
			case strings.Contains(p, "*"):
				kinds = append(kinds, argPtr)
			case strings.HasPrefix(p, "long long "):
				kinds = append(kinds, argInt64)
			case strings.HasPrefix(p, "int "):
				kinds = append(kinds, argInt)
			case strings.HasPrefix(p, "float "):
				kinds = append(kinds, argFloat)
			default:
				return nil, fmt.Errorf("kernels/cuda: kernel %s: unsupported parameter %q", name, p)
			}
		}
		out[name] = kinds
	}
	return out, nil
}

// checkArgs verifies a launch's Go arguments against the kernel's signature.
func checkArgs(name string, sig []argKind, args []any) error {
	if len(args) != len(sig) {
		return fmt.Errorf("kernels/cuda: launch %s: %d arguments, the kernel takes %d", name, len(args), len(sig))
	}
	for i, a := range args {
		var ok bool
		switch sig[i] {
		case argPtr:
			_, ok = a.(cu.DevicePtr)
		case argInt:
			_, ok = a.(int32)
		case argInt64:
			_, ok = a.(int64)
		case argFloat:
			_, ok = a.(float32)
		}
		if !ok {
			return fmt.Errorf("kernels/cuda: launch %s: argument %d is %T, the kernel takes %v", name, i, a, sig[i])
		}
	}
	return nil
}

// Launch-shape limits of every CUDA GPU since compute capability 3.0.
const (
	maxThreadsPerBlock = 1024
	maxGridX           = 1<<31 - 1
	maxGridYZ          = 65535
	// defaultSharedLimit is what a block may use without opting in.
	defaultSharedLimit = 48 << 10
)

// launchCfg is one kernel launch's shape.
type launchCfg struct {
	grid, block cu.Dim3
	shared      int
	// optIn is the dynamic shared memory the kernel was allowed beyond the
	// default (launchOptIn sets it after cuFuncSetAttribute); 0: none.
	optIn int
}

// validate checks a shape against the hardware limits.
func (c launchCfg) validate(name string) error {
	g, b := c.grid, c.block
	switch {
	case g.X < 1 || g.Y < 1 || g.Z < 1 || b.X < 1 || b.Y < 1 || b.Z < 1:
		return fmt.Errorf("kernels/cuda: %s: empty launch grid %v block %v", name, g, b)
	case b.X*b.Y*b.Z > maxThreadsPerBlock:
		return fmt.Errorf("kernels/cuda: %s: block %v has more than %d threads", name, b, maxThreadsPerBlock)
	case g.X > maxGridX || g.Y > maxGridYZ || g.Z > maxGridYZ:
		return fmt.Errorf("kernels/cuda: %s: grid %v exceeds the limits", name, g)
	case c.shared > max(defaultSharedLimit, c.optIn):
		return fmt.Errorf("kernels/cuda: %s: %d bytes of dynamic shared memory needs an opt-in", name, c.shared)
	}
	return nil
}

const elemBlock = 256

// elementwiseCfg covers n elements with 256-thread blocks and a grid-stride
// loop, at most 32 blocks per multiprocessor (enough to hide latency, few
// enough that the loop amortises the index math).
func elementwiseCfg(n int64, sms int) launchCfg {
	blocks := (n + elemBlock - 1) / elemBlock
	blocks = min(blocks, int64(max(sms, 1)*32))
	return launchCfg{grid: cu.Dim3{X: int(max(blocks, 1)), Y: 1, Z: 1}, block: cu.Dim3{X: elemBlock, Y: 1, Z: 1}}
}

const rowBlock = 128 // 4 warps, one row each

// warpPerRowCfg gives each of rows rows one warp.
func warpPerRowCfg(rows int) launchCfg {
	rowsPerBlock := rowBlock / 32
	return launchCfg{grid: cu.Dim3{X: max((rows+rowsPerBlock-1)/rowsPerBlock, 1), Y: 1, Z: 1}, block: cu.Dim3{X: rowBlock, Y: 1, Z: 1}}
}

// colsumPlan is the two-pass column sum of Z matrices [R, C].
type colsumPlan struct {
	partial      launchCfg
	chunks       int
	rowsPerChunk int
	// partialFloats is the scratch the partial sums need.
	partialFloats int
}

// colsumCfg chunks the rows so that each thread sums at most 16 rows
// (block (32, 8): 128 rows per block) and the chunks, at most 1024 per
// matrix, spread the work over the GPU.
func colsumCfg(R, C, Z int) colsumPlan {
	chunks := min(max((R+127)/128, 1), 1024)
	per := (R + chunks - 1) / chunks
	chunks = max((R+per-1)/per, 1)
	return colsumPlan{
		partial:       launchCfg{grid: cu.Dim3{X: (C + 31) / 32, Y: chunks, Z: Z}, block: cu.Dim3{X: 32, Y: 8, Z: 1}},
		chunks:        chunks,
		rowsPerChunk:  per,
		partialFloats: Z * chunks * C,
	}
}

const msePartialBlocks = 1024

// mseCfg is the first pass of the MSE reduction: at most 1024 blocks of 256.
func mseCfg(n int64) launchCfg {
	blocks := min((n+elemBlock-1)/elemBlock, msePartialBlocks)
	return launchCfg{grid: cu.Dim3{X: int(max(blocks, 1)), Y: 1, Z: 1}, block: cu.Dim3{X: elemBlock, Y: 1, Z: 1}}
}

// sharedOptIner is a device that can allow a kernel more than the default
// 48 KiB of dynamic shared memory per block (the gpu: cuFuncSetAttribute).
type sharedOptIner interface {
	optInShared(kernel string, bytes int) error
}

// optInShared raises kernel's dynamic shared memory limit to bytes.
func (g *gpu) optInShared(kernel string, bytes int) error {
	f, ok := g.funcs[kernel]
	if !ok {
		return fmt.Errorf("kernels/cuda: no kernel %s", kernel)
	}
	return f.SetMaxDynamicShared(bytes)
}

// sharedLimit is the most dynamic shared memory a block may opt in to on
// this device (the default 48 KiB when the device does not say).
func (b *Backend) sharedLimit() int {
	return max(b.dev.info().MaxSharedPerBlockOptin, defaultSharedLimit)
}

// launchOptIn launches a kernel whose dynamic shared memory may exceed the
// default, first raising the kernel's limit to cfg.shared. The attribute is
// a host-side setting of the function and idempotent, so it is set before
// every such launch rather than remembered.
func (o *op) launchOptIn(kernel string, cfg launchCfg, args ...any) {
	if !o.ok {
		return
	}
	if cfg.shared > defaultSharedLimit {
		if lim := o.b.sharedLimit(); cfg.shared > lim {
			o.failf(fmt.Errorf("%s needs %d bytes of shared memory per block, the device allows %d", kernel, cfg.shared, lim))
			return
		}
		d, ok := o.b.dev.(sharedOptIner)
		if !ok {
			o.failf(fmt.Errorf("%s needs %d bytes of shared memory per block and the device cannot allow more than %d", kernel, cfg.shared, defaultSharedLimit))
			return
		}
		if err := d.optInShared(kernel, cfg.shared); err != nil {
			o.failf(err)
			return
		}
		cfg.optIn = cfg.shared
	}
	o.launch(kernel, cfg, args...)
}

// The fused attention kernels' tiling (flash_attention.cu's FA_* constants).
const (
	flashThreads = 128
	flashBR      = 64 // query rows per tile
	flashBCFwd   = 64 // keys per tile, forward
	flashBCBwd   = 32 // keys per tile, backward
)

// flashKind is one of the fused attention kernels.
type flashKind int

const (
	flashForward flashKind = iota
	flashDKDV
	flashDQ
	// flashForwardTC, flashDKDVTC and flashDQTC are the three on tensor
	// cores (flash_attention_tc.cu): the mixed-precision backend's kernels
	// on sm_80 and later. They take no bf16 argument (always bf16), and
	// the dK/dV one owns flashBR keys per block.
	flashForwardTC
	flashDKDVTC
	flashDQTC
)

var flashKinds = []flashKind{flashForward, flashDKDV, flashDQ, flashForwardTC, flashDKDVTC, flashDQTC}

// tensorCores reports a flash_attention_tc.cu kernel.
func (k flashKind) tensorCores() bool { return k >= flashForwardTC }

// flashHeadDims are the padded head dims the kernels are instantiated for
// (multiples of 16, flash_attention.cu's thread layout); 80 serves bench-L's
// (DiT-XL's) 72 with 11 % padding instead of 96's 33 %.
var flashHeadDims = []int{32, 64, 80, 96, 128}

// flashHeadDim is the padded head dim of the instantiation serving head dim
// hd, 0 when none does (hd > 128: the kernels keep hd/16 accumulators per
// row in registers, and beyond 128 they would spill).
func flashHeadDim(hd int) int {
	for _, p := range flashHeadDims {
		if hd >= 1 && hd <= p {
			return p
		}
	}
	return 0
}

// kernel names the instantiation for padded head dim hdp.
func (k flashKind) kernel(hdp int) string {
	return fmt.Sprintf("flash_attn_%s_%d", [...]string{"forward", "backward_dkdv", "backward_dq", "forward_tc", "backward_dkdv_tc", "backward_dq_tc"}[k], hdp)
}

// flashShared is the dynamic shared memory of kind at padded head dim hdp:
// flash_attention.cu's carve-up, fp32 tiles with rows padded by one float
// (flash_attention_tc.cu's: bf16 tiles with rows padded by 8 values).
func flashShared(kind flashKind, hdp int) int {
	switch kind {
	case flashForwardTC: // sQ [BR], sK, sV [BC] of hdp+8 bf16
		return 2 * (flashBR + 2*flashBCFwd) * (hdp + 8)
	case flashDKDVTC: // sK, sV [BR], sQ, sdO [BC_BWD] of hdp+8 bf16; sL, sD [BC_BWD] floats
		return 2*(2*flashBR+2*flashBCBwd)*(hdp+8) + 4*2*flashBCBwd
	case flashDQTC: // sQ, sdO [BR], sK, sV [BC_BWD] of hdp+8 bf16
		return 2 * (2*flashBR + 2*flashBCBwd) * (hdp + 8)
	}
	ld := hdp + 1
	var floats int
	switch kind {
	case flashForward: // sQ [BR], sK, sV [BC] of ld; sP [BR][BC+1]
		floats = flashBR*ld + 2*flashBCFwd*ld + flashBR*(flashBCFwd+1)
	case flashDKDV: // sK, sV [BC], sQ, sdO [BR] of ld; sP, sdS [BR][BC+1]; sL, sD [BR]
		floats = 2*flashBCBwd*ld + 2*flashBR*ld + 2*flashBR*(flashBCBwd+1) + 2*flashBR
	case flashDQ: // sQ, sdO [BR], sK, sV [BC] of ld; sdS [BR][BC+1]; sL, sD [BR]
		floats = 2*flashBR*ld + 2*flashBCBwd*ld + flashBR*(flashBCBwd+1) + 2*flashBR
	}
	return 4 * floats
}

// flashCfg launches one block of flashThreads per tile of every (sample,
// head): tiles of flashBR query rows for the forward and dQ kernels, of
// flashBCBwd keys for dK/dV.
func flashCfg(kind flashKind, d kernels.AttentionDims, hdp int) launchCfg {
	n, tile := d.Nq, flashBR
	switch kind {
	case flashDKDV:
		n, tile = d.Nk, flashBCBwd
	case flashDKDVTC:
		n = d.Nk
	}
	tiles := (n + tile - 1) / tile
	return launchCfg{grid: cu.Dim3{X: tiles * d.B * d.Heads, Y: 1, Z: 1}, block: cu.Dim3{X: flashThreads, Y: 1, Z: 1}, shared: flashShared(kind, hdp)}
}
