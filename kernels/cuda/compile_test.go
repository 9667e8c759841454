package cuda

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cu "github.com/fmtrain/fmtrain/cuda"
)

// fakeCompiler counts compilations and returns an image naming its options.
type fakeCompiler struct {
	calls int
	fail  map[bool]bool // by cubin: fail that kind
}

func (f *fakeCompiler) Compile(src, name string, options []string, cubin bool) ([]byte, string, error) {
	f.calls++
	if f.fail[cubin] {
		return nil, "error: unsupported gpu architecture", errors.New("NVRTC_ERROR_INVALID_OPTION")
	}
	return []byte("image:" + strings.Join(options, " ")), "", nil
}

func TestCacheKey(t *testing.T) {
	t90, t80 := targets(9, 0)[0], targets(8, 0)[0]
	ptx90 := targets(9, 0)[1]
	k := cacheKey("src", t90, "nvrtc 12.4")
	for name, other := range map[string]string{
		"source":   cacheKey("src2", t90, "nvrtc 12.4"),
		"arch":     cacheKey("src", t80, "nvrtc 12.4"),
		"kind":     cacheKey("src", ptx90, "nvrtc 12.4"),
		"compiler": cacheKey("src", t90, "nvrtc 13.0"),
	} {
		if other == k {
			t.Errorf("changing the %s keeps the cache key", name)
		}
	}
	if cacheKey("src", t90, "nvrtc 12.4") != k || len(k) != 32 {
		t.Errorf("key not stable or wrong length: %q", k)
	}
	if t90.options[0] != "--gpu-architecture=sm_90" || !t90.cubin || ptx90.options[0] != "--gpu-architecture=compute_90" || ptx90.cubin {
		t.Errorf("targets: %+v %+v", t90, ptx90)
	}
}

func TestBuildModuleCaches(t *testing.T) {
	dir := t.TempDir()
	c := &fakeCompiler{}
	b, err := buildModule(c, "v1", dir, "src", 9, 0, nil)
	if err != nil || b.fromCache || c.calls != 1 || !bytes.HasPrefix(b.image, []byte("image:--gpu-architecture=sm_90")) {
		t.Fatalf("first build: %+v %v calls %d", b, err, c.calls)
	}
	b2, err := buildModule(c, "v1", dir, "src", 9, 0, nil)
	if err != nil || !b2.fromCache || c.calls != 1 || !bytes.Equal(b2.image, b.image) {
		t.Fatalf("second build should come from the cache: %+v %v calls %d", b2, err, c.calls)
	}
	// A corrupt cache file is rebuilt, not loaded.
	raw, _ := os.ReadFile(b.cachePath)
	raw[len(raw)-1] ^= 0xff
	os.WriteFile(b.cachePath, raw, 0o644)
	b3, err := buildModule(c, "v1", dir, "src", 9, 0, nil)
	if err != nil || b3.fromCache || c.calls != 2 {
		t.Fatalf("corrupt cache: %+v %v calls %d", b3, err, c.calls)
	}
	// Another source is another entry.
	if _, err := buildModule(c, "v1", dir, "src changed", 9, 0, nil); err != nil || c.calls != 3 {
		t.Fatalf("changed source should recompile: calls %d", c.calls)
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
	if len(entries) != 2 {
		t.Errorf("%d cache entries, want 2", len(entries))
	}
}

func TestBuildModuleFallsBackToPTX(t *testing.T) {
	// NVRTC too old for the architecture: CUBIN fails, PTX serves.
	c := &fakeCompiler{fail: map[bool]bool{true: true}}
	b, err := buildModule(c, "v1", "", "src", 10, 0, nil)
	if err != nil || b.target.cubin || !strings.Contains(string(b.image), "compute_100") {
		t.Fatalf("%+v %v", b, err)
	}
	// The driver rejects the CUBIN: PTX is tried next.
	c = &fakeCompiler{}
	b, err = buildModule(c, "v1", "", "src", 9, 0, func(img []byte) error {
		if strings.Contains(string(img), "sm_90") {
			return &cu.Error{Call: "cuModuleLoadData", Code: 209, Name: "CUDA_ERROR_NO_BINARY_FOR_GPU"}
		}
		return nil
	})
	if err != nil || b.target.cubin {
		t.Fatalf("%+v %v", b, err)
	}
	// Both fail: one error naming both attempts and the compute capability.
	c = &fakeCompiler{fail: map[bool]bool{true: true, false: true}}
	_, err = buildModule(c, "v1", "", "src", 9, 0, nil)
	if err == nil || !strings.Contains(err.Error(), "compute capability 9.0") || !strings.Contains(err.Error(), "sm_90") || !strings.Contains(err.Error(), "compute_90") {
		t.Fatalf("error %v", err)
	}
}

func TestProgramSourceAndSignatures(t *testing.T) {
	src, err := programSource()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src, "#line 1 \"common.cu\"") {
		t.Error("common.cu (the helpers) must come first")
	}
	sigs, err := parseKernels(src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]argKind{
		"adamw":          {argPtr, argPtr, argPtr, argPtr, argInt64, argFloat, argFloat, argFloat, argFloat, argFloat, argFloat, argFloat, argFloat},
		"colsum_partial": {argPtr, argPtr, argPtr, argInt, argInt, argInt, argInt},
		"cast_bf16":      {argPtr, argPtr, argInt64},
	}
	for name, w := range want {
		if got := sigs[name]; len(got) != len(w) {
			t.Errorf("%s: %v, want %v", name, got, w)
		} else {
			for i := range w {
				if got[i] != w[i] {
					t.Errorf("%s arg %d: %v, want %v", name, i, got[i], w[i])
				}
			}
		}
	}
	if _, err := parseKernels(`extern "C" __global__ void k(double x)`); err == nil {
		t.Error("unsupported parameter type accepted")
	}
	if _, err := parseKernels(`extern "C" __global__ void k(int x) {} extern "C" __global__ void k(int y)`); err == nil {
		t.Error("duplicate kernel accepted")
	}
}

// TestNVRTCCompilesKernels compiles the real program with the real NVRTC
// (make cuda-libs-check provides Debian's; a CUDA host has its own).
func TestNVRTCCompilesKernels(t *testing.T) {
	rtc, err := cu.LoadNVRTC()
	if err != nil {
		if os.Getenv("FMTRAIN_CUDA_LIBS_CHECK") == "1" {
			t.Fatal(err)
		}
		t.Skipf("no NVRTC on this host (make cuda-libs-check runs this test with Debian's): %v", err)
	}
	src, err := programSource()
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := parseKernels(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NVRTC %d.%d from %s", rtc.Major, rtc.Minor, rtc.Path)
	for _, tc := range []struct{ major, minor, which int }{{7, 5, 0}, {8, 0, 0}, {9, 0, 0}, {9, 0, 1}} {
		tg := targets(tc.major, tc.minor)[tc.which]
		img, log, err := rtc.Compile(src, "fmtrain_kernels.cu", tg.options, tg.cubin)
		if err != nil {
			t.Fatalf("%v: %v", tg.options, err)
		}
		if strings.TrimSpace(log) != "" {
			t.Errorf("%v: compiler warnings:\n%s", tg.options, log)
		}
		if tg.cubin {
			if !bytes.HasPrefix(img, []byte("\x7fELF")) {
				t.Errorf("%v: CUBIN is not an ELF image", tg.options)
			}
			for name := range sigs {
				if !bytes.Contains(img, []byte(name+"\x00")) {
					t.Errorf("%v: kernel %s missing from the CUBIN", tg.options, name)
				}
			}
		} else {
			for name := range sigs {
				if !strings.Contains(string(img), ".entry "+name+"(") {
					t.Errorf("%v: no .entry %s in the PTX", tg.options, name)
				}
			}
		}
		t.Logf("%v: %d bytes", tg.options, len(img))
	}
	// And through the disk cache.
	dir := t.TempDir()
	b, err := buildModule(rtc, "test", dir, src, 9, 0, nil)
	if err != nil || b.fromCache {
		t.Fatal(err, b.fromCache)
	}
	if b2, err := buildModule(rtc, "test", dir, src, 9, 0, nil); err != nil || !b2.fromCache {
		t.Fatal(err, b2.fromCache)
	}
}
