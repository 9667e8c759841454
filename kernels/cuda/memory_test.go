package cuda

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	cu "github.com/fmtrain/fmtrain/cuda"
)

func TestSizeClass(t *testing.T) {
	cases := map[int]int{1: 256, 256: 256, 257: 512, 1000: 1024, 1 << 20: 1 << 20, 1<<20 + 1: 2 << 20, 5 << 20: 6 << 20, 6 << 20: 6 << 20}
	for in, want := range cases {
		if got := sizeClass(in); got != want {
			t.Errorf("sizeClass(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestPoolReusesAndTrims(t *testing.T) {
	var live, next int
	fail := false
	p := newPool(func(bytes int) (cu.DevicePtr, error) {
		if fail && live > 0 {
			return 0, errors.New("out of memory")
		}
		live++
		next += 1 << 24
		return cu.DevicePtr(next), nil
	}, func(cu.DevicePtr) error { live--; return nil })
	a, _ := p.get(1000)
	p.put(a)
	b, _ := p.get(900) // same class: reused
	if b != a || live != 1 {
		t.Fatalf("no reuse: %v %v live %d", a, b, live)
	}
	c, _ := p.get(3000) // another class: a new block
	if c == a || live != 2 || p.held != 1024+4096 {
		t.Fatalf("live %d held %d", live, p.held)
	}
	p.put(b)
	p.put(c)
	// Out of memory with cached blocks: they are freed and the call retried.
	fail = true
	d, err := p.get(1 << 22)
	if err != nil || d == 0 {
		t.Fatalf("retry after trim: %v", err)
	}
	if live != 1 || len(p.lists) != 0 || p.held != 4<<20 {
		t.Errorf("trim did not free the cache: live %d lists %v held %d", live, p.lists, p.held)
	}
	// Out of memory with nothing cached: an error naming the size.
	if _, err := p.get(1 << 23); err == nil || !strings.Contains(err.Error(), "scratch of 8388608 bytes") {
		t.Errorf("got %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("put of an unknown block did not panic")
		}
	}()
	p.put(12345)
}

func TestManagedRanges(t *testing.T) {
	var m managed
	m.add(1000, 2000)
	m.add(5000, 6000)
	m.add(3000, 4000)
	for _, c := range []struct {
		lo, hi uintptr
		want   bool
	}{{1000, 2000, true}, {1500, 1600, true}, {1500, 2001, false}, {999, 1001, false}, {3000, 3004, true}, {4000, 4004, false}, {5999, 6000, true}, {7000, 7004, false}} {
		if got := m.contains(c.lo, c.hi); got != c.want {
			t.Errorf("contains(%d,%d) = %v", c.lo, c.hi, got)
		}
	}
	if !m.remove(3000) || m.contains(3000, 3004) || m.remove(3000) {
		t.Error("remove")
	}
}

// TestStagerMergesAliasedViews: q, k, v as offset views of one host buffer
// (and dq, dk, dv of another) must share one staged copy each, so that
// copying back one view never undoes another's writes.
func TestStagerMergesAliasedViews(t *testing.T) {
	var m managed
	qkv := make([]float32, 100)
	dqkv := make([]float32, 100)
	dev := make([]float32, 50) // pretend-managed buffer
	lo, hi := sliceRange(dev, len(dev))
	m.add(lo, hi)

	var st stager
	var none bf16Stores
	iq := st.add(&m, &none, qkv[0:], 90, false, true)
	ik := st.add(&m, &none, qkv[10:], 90, false, true)
	idq := st.add(&m, &none, dqkv[0:], 90, true, false)
	idk := st.add(&m, &none, dqkv[10:], 90, true, false)
	iman := st.add(&m, &none, dev[5:], 10, true, false)
	inil := st.add(&m, &none, nil, 10, true, false)
	st.plan()
	if len(st.regions) != 2 {
		t.Fatalf("%d regions, want 2 (one per host buffer): %+v", len(st.regions), st.regions)
	}
	for i := range st.regions {
		st.regions[i].dev = cu.DevicePtr(1<<40 + i<<20)
	}
	r0, r1 := st.regions[0], st.regions[1]
	if r0.hi-r0.lo != 400 || r1.hi-r1.lo != 400 {
		t.Errorf("region sizes %d %d, want 400 bytes each", r0.hi-r0.lo, r1.hi-r1.lo)
	}
	if st.ptr(ik)-st.ptr(iq) != 40 || st.ptr(idk)-st.ptr(idq) != 40 {
		t.Errorf("view offsets not kept: q %#x k %#x dq %#x dk %#x", st.ptr(iq), st.ptr(ik), st.ptr(idq), st.ptr(idk))
	}
	var wrote int
	for _, r := range st.regions {
		if r.write {
			wrote++
		}
	}
	if wrote != 1 {
		t.Errorf("%d regions marked written, want 1 (dqkv)", wrote)
	}
	if st.ptr(iman) != cu.DevicePtr(uintptr(unsafe.Pointer(&dev[5]))) {
		t.Error("managed argument not used in place")
	}
	if st.ptr(inil) != 0 {
		t.Error("nil argument should be a null pointer")
	}
}

func TestDevicePointer(t *testing.T) {
	b, _ := newFakeBackend(t, false)
	s := b.Alloc(64)
	if p, ok := b.DevicePointer(s[8:16]); !ok || p != cu.DevicePtr(uintptr(unsafe.Pointer(&s[8]))) {
		t.Errorf("managed slice: %#x %v", p, ok)
	}
	if _, ok := b.DevicePointer(make([]float32, 8)); ok {
		t.Error("Go memory reported as device memory")
	}
	if _, ok := b.DevicePointer(nil); ok {
		t.Error("nil slice reported as device memory")
	}
}

// TestStagerBF16Storage: views of a bf16 store's handle resolve to device
// addresses at 2 bytes per value, are never staged, and are refused where
// an op takes only float32.
func TestStagerBF16Storage(t *testing.T) {
	var m managed
	handle := make([]float32, 64) // stands in for the reserved range
	lo, hi := sliceRange(handle, len(handle))
	stores := bf16Stores{dev: map[uintptr]cu.DevicePtr{lo: 1 << 40}}
	stores.handles.add(lo, hi)

	var st stager
	ia := st.add(&m, &stores, handle[10:], 20, true, true)
	ib := st.add(&m, &stores, handle[33:], 31, false, true)
	ihost := st.add(&m, &stores, make([]float32, 8), 8, false, false)
	if i := st.misplacedBF16(); i != -1 {
		t.Errorf("misplacedBF16 = %d with bf16 only where activations go", i)
	}
	st.plan()
	if len(st.regions) != 1 {
		t.Errorf("%d staged regions, want 1 (only the host slice)", len(st.regions))
	}
	if !st.args[ia].bf16 || !st.args[ib].bf16 || st.args[ihost].bf16 {
		t.Errorf("bf16 flags %v %v %v, want true true false", st.args[ia].bf16, st.args[ib].bf16, st.args[ihost].bf16)
	}
	if st.ptr(ia) != 1<<40+20 || st.ptr(ib) != 1<<40+66 {
		t.Errorf("device addresses %#x %#x, want base+20 and base+66", st.ptr(ia), st.ptr(ib))
	}
	// Past the handle's end is not storage.
	if _, ok := stores.resolve(lo+4, hi+4); ok {
		t.Error("a range past the handle resolved")
	}
	st.add(&m, &stores, handle[:4], 4, true, false)
	if i := st.misplacedBF16(); i != 3 {
		t.Errorf("misplacedBF16 = %d, want 3 (a handle given as a float32 argument)", i)
	}
}
