package cuda

import (
	"fmt"
	"sort"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
)

// pool is a caching allocator of device scratch memory: freed blocks go to
// a free list per size class and are handed out again, so steady-state
// steps call cuMemAlloc never. Reuse is safe without events because all of
// the backend's work runs in order on one stream. Classes are powers of two
// up to 1 MiB and multiples of 2 MiB above, so waste is bounded (≤ 50 %
// small, ≤ 2 MiB large). Used by one goroutine at a time (the backend's).
type pool struct {
	raw   func(bytes int) (cu.DevicePtr, error)
	free  func(cu.DevicePtr) error
	lists map[int][]cu.DevicePtr
	inUse map[cu.DevicePtr]int
	// held is the bytes allocated from the device, in use or cached.
	held int
}

func newPool(raw func(int) (cu.DevicePtr, error), free func(cu.DevicePtr) error) *pool {
	return &pool{raw: raw, free: free, lists: map[int][]cu.DevicePtr{}, inUse: map[cu.DevicePtr]int{}}
}

// sizeClass rounds a request up to its class.
func sizeClass(bytes int) int {
	const small, large = 256, 2 << 20
	if bytes <= small {
		return small
	}
	if bytes <= 1<<20 {
		c := small
		for c < bytes {
			c <<= 1
		}
		return c
	}
	return (bytes + large - 1) / large * large
}

// get returns a block of at least bytes.
func (p *pool) get(bytes int) (cu.DevicePtr, error) {
	c := sizeClass(bytes)
	if l := p.lists[c]; len(l) > 0 {
		ptr := l[len(l)-1]
		p.lists[c] = l[:len(l)-1]
		p.inUse[ptr] = c
		return ptr, nil
	}
	ptr, err := p.raw(c)
	if err != nil {
		// Out of memory with blocks cached: give them back and retry once.
		if p.trim() > 0 {
			ptr, err = p.raw(c)
		}
		if err != nil {
			return 0, fmt.Errorf("kernels/cuda: scratch of %d bytes (%d held): %w", c, p.held, err)
		}
	}
	p.held += c
	p.inUse[ptr] = c
	return ptr, nil
}

// put returns a block to its free list.
func (p *pool) put(ptr cu.DevicePtr) {
	c, ok := p.inUse[ptr]
	if !ok {
		panic(fmt.Sprintf("kernels/cuda: pool.put of unknown block %#x", uintptr(ptr)))
	}
	delete(p.inUse, ptr)
	p.lists[c] = append(p.lists[c], ptr)
}

// trim frees every cached block and returns how many bytes it freed.
func (p *pool) trim() int {
	n := 0
	for c, l := range p.lists {
		for _, ptr := range l {
			if p.free(ptr) == nil {
				n += c
			}
		}
		delete(p.lists, c)
	}
	p.held -= n
	return n
}

// managed records the managed allocations handed out as Go slices, so an
// op can tell a slice the GPU can address directly from host memory it
// must stage.
type managed struct {
	ranges []span // sorted by lo, disjoint
}

// span is a byte range [lo, hi) of the address space.
type span struct{ lo, hi uintptr }

func (m *managed) add(lo, hi uintptr) {
	i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].lo >= lo })
	m.ranges = append(m.ranges, span{})
	copy(m.ranges[i+1:], m.ranges[i:])
	m.ranges[i] = span{lo, hi}
}

func (m *managed) remove(lo uintptr) bool {
	i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].lo >= lo })
	if i == len(m.ranges) || m.ranges[i].lo != lo {
		return false
	}
	m.ranges = append(m.ranges[:i], m.ranges[i+1:]...)
	return true
}

// find returns the range holding all of [lo, hi), if one does.
func (m *managed) find(lo, hi uintptr) (span, bool) {
	i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].lo > lo }) - 1
	if i >= 0 && hi <= m.ranges[i].hi {
		return m.ranges[i], true
	}
	return span{}, false
}

// contains reports whether [lo, hi) lies inside one managed allocation.
func (m *managed) contains(lo, hi uintptr) bool {
	_, ok := m.find(lo, hi)
	return ok
}

// bf16Stores are the activation buffers of AllocActivations. Each is a
// handle, a reservation of address space with no access (4 bytes per
// value, so Go slices and their offsets work unchanged and a host access
// faults), and bf16 device memory: the value at handle byte offset 4i
// lives at device byte offset 2i.
type bf16Stores struct {
	handles managed
	dev     map[uintptr]cu.DevicePtr // handle base -> device base
}

// resolve returns the device address of the handle range [lo, hi).
func (s *bf16Stores) resolve(lo, hi uintptr) (cu.DevicePtr, bool) {
	r, ok := s.handles.find(lo, hi)
	if !ok {
		return 0, false
	}
	return s.dev[r.lo] + cu.DevicePtr((lo-r.lo)/2), true
}

// stager resolves an op's slice arguments to device addresses. Slices in
// managed memory are used in place; other (ordinary Go) slices are copied
// to scratch before the op and, when written, back after it. Arguments
// whose host ranges overlap (q, k, v as offset views of one buffer; dq, dk,
// dv of one gradient) share one staged copy, so writes through one view
// are never undone by copying back another.
type stager struct {
	args    []stageArg
	regions []stageRegion
}

type stageArg struct {
	p       unsafe.Pointer // &s[0], nil for an empty slice
	lo, hi  uintptr        // host byte range used (hi == lo for nil/empty)
	write   bool
	managed bool
	// bf16: a handle of bf16 activation storage at device address dev
	// (never staged); activation: the op may take one here.
	bf16, activation bool
	dev              cu.DevicePtr
	region           int // index into regions when staged
}

type stageRegion struct {
	p      unsafe.Pointer // host address of lo
	lo, hi uintptr
	write  bool
	dev    cu.DevicePtr
}

// sliceRange is the byte range of the first n floats of s (n clipped to len(s)).
func sliceRange(s []float32, n int) (uintptr, uintptr) {
	if len(s) == 0 || n <= 0 {
		return 0, 0
	}
	n = min(n, len(s))
	lo := uintptr(unsafe.Pointer(&s[0]))
	return lo, lo + uintptr(n)*4
}

// add registers an argument using the first n floats of s, written by the
// op when write is true; activation says the op may take bf16 storage
// there. It returns the argument's index.
func (st *stager) add(m *managed, stores *bf16Stores, s []float32, n int, write, activation bool) int {
	lo, hi := sliceRange(s, n)
	a := stageArg{lo: lo, hi: hi, write: write, activation: activation, region: -1}
	if lo != hi {
		a.p = unsafe.Pointer(&s[0])
		a.dev, a.bf16 = stores.resolve(lo, hi)
		a.managed = !a.bf16 && m.contains(lo, hi)
	}
	st.args = append(st.args, a)
	return len(st.args) - 1
}

// misplacedBF16 returns the first argument holding bf16 storage where the
// op takes only float32, or -1.
func (st *stager) misplacedBF16() int {
	for i, a := range st.args {
		if a.bf16 && !a.activation {
			return i
		}
	}
	return -1
}

// plan merges the staged arguments' ranges into disjoint regions.
func (st *stager) plan() {
	var idx []int
	for i, a := range st.args {
		if a.lo != a.hi && !a.managed && !a.bf16 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(x, y int) bool { return st.args[idx[x]].lo < st.args[idx[y]].lo })
	for _, i := range idx {
		a := &st.args[i]
		if n := len(st.regions); n > 0 && a.lo < st.regions[n-1].hi {
			r := &st.regions[n-1]
			r.hi = max(r.hi, a.hi)
			r.write = r.write || a.write
			a.region = n - 1
			continue
		}
		st.regions = append(st.regions, stageRegion{p: a.p, lo: a.lo, hi: a.hi, write: a.write})
		a.region = len(st.regions) - 1
	}
}

// ptr is the device address of argument i (0 for a nil or empty slice).
func (st *stager) ptr(i int) cu.DevicePtr {
	a := st.args[i]
	switch {
	case a.lo == a.hi:
		return 0
	case a.bf16:
		return a.dev
	case a.managed:
		return cu.DevicePtr(a.lo)
	}
	r := st.regions[a.region]
	return r.dev + cu.DevicePtr(a.lo-r.lo)
}
