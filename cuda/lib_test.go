package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
)

// fakeEnv is a searchEnv over a temp folder: open succeeds for the paths in
// loadable and records every attempt.
type fakeEnv struct {
	vars     map[string]string
	loadable map[string]bool
	tried    []string
}

func (f *fakeEnv) env() searchEnv {
	return searchEnv{
		getenv: func(k string) string { return f.vars[k] },
		glob:   filepath.Glob,
		open: func(p string) (uintptr, error) {
			f.tried = append(f.tried, p)
			if f.loadable[p] {
				return 1, nil
			}
			return 0, fmt.Errorf("%s: cannot open shared object file", p)
		},
	}
}

func touch(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindLibraryPrefersSonameThenDirs(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "cuda-13.0")
	ld := filepath.Join(dir, "ld")
	touch(t, filepath.Join(home, "lib64", "libcublas.so.13"), filepath.Join(ld, "libcublas.so.12"))

	// The loader knows the soname: used first, no folder searched.
	f := &fakeEnv{vars: map[string]string{}, loadable: map[string]bool{"libcublas.so.12": true}}
	_, path, err := findLibrary(specCUBLAS, f.env())
	if err != nil || path != "libcublas.so.12" {
		t.Fatalf("soname: %q, %v", path, err)
	}
	if f.tried[0] != "libcublas.so.13" || f.tried[1] != "libcublas.so.12" {
		t.Errorf("sonames tried in order %v, want 13 before 12", f.tried)
	}

	// Not in the loader's cache: LD_LIBRARY_PATH comes before CUDA_HOME.
	f = &fakeEnv{
		vars:     map[string]string{"LD_LIBRARY_PATH": ld, "CUDA_HOME": home},
		loadable: map[string]bool{filepath.Join(ld, "libcublas.so.12"): true, filepath.Join(home, "lib64", "libcublas.so.13"): true},
	}
	_, path, err = findLibrary(specCUBLAS, f.env())
	if err != nil || path != filepath.Join(ld, "libcublas.so.12") {
		t.Fatalf("LD_LIBRARY_PATH: %q, %v", path, err)
	}

	// Only CUDA_HOME has it.
	f = &fakeEnv{vars: map[string]string{"CUDA_HOME": home}, loadable: map[string]bool{filepath.Join(home, "lib64", "libcublas.so.13"): true}}
	_, path, err = findLibrary(specCUBLAS, f.env())
	if err != nil || path != filepath.Join(home, "lib64", "libcublas.so.13") {
		t.Fatalf("CUDA_HOME: %q, %v", path, err)
	}
}

func TestCandidatesOrderVersions(t *testing.T) {
	dir := t.TempDir()
	touch(t, filepath.Join(dir, "libnvrtc.so.12.4.99"), filepath.Join(dir, "libnvrtc.so.14"), filepath.Join(dir, "libnvrtc.so.12.10.1"), filepath.Join(dir, "libnvrtc.so"))
	got := candidates(specNVRTC, dir, osSearchEnv)
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	want := "libnvrtc.so.13 libnvrtc.so.12 libnvrtc.so.11 libnvrtc.so.14 libnvrtc.so.12.10.1 libnvrtc.so.12.4.99 libnvrtc.so"
	if strings.Join(names, " ") != want {
		t.Errorf("candidates:\n got %s\nwant %s", strings.Join(names, " "), want)
	}
	if c := candidates(specDriver, dir, osSearchEnv); len(c) != 1 || filepath.Base(c[0]) != "libcuda.so.1" {
		t.Errorf("driver candidates %v: want only libcuda.so.1", c)
	}
}

func TestFindLibraryMissingSaysWhy(t *testing.T) {
	f := &fakeEnv{vars: map[string]string{"CUDA_HOME": "/nonexistent/cuda"}}
	_, _, err := findLibrary(specNVRTC, f.env())
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	msg := err.Error()
	for _, want := range []string{"NVRTC", "libnvrtc.so.13", "cannot open shared object file", "CUDA_HOME", "LD_LIBRARY_PATH"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	// Every search folder was tried with the CUDA_HOME ones included.
	var sawHome bool
	for _, p := range f.tried {
		sawHome = sawHome || strings.HasPrefix(p, "/nonexistent/cuda/lib64/")
	}
	if !sawHome {
		t.Errorf("CUDA_HOME/lib64 was not searched: %v", f.tried)
	}
}

// TestRealLoadersOnThisHost runs every Load* against the real system. On a
// host without CUDA (CI) each must fail with ErrLibraryNotFound naming its
// library; where a library is present it must load and answer.
func TestRealLoadersOnThisHost(t *testing.T) {
	d, err := LoadDriver()
	switch {
	case errors.Is(err, ErrLibraryNotFound):
		if !strings.Contains(err.Error(), "libcuda.so.1") || !strings.Contains(err.Error(), "install the NVIDIA driver") {
			t.Errorf("driver error %q should name libcuda.so.1 and the fix", err)
		}
	case err != nil:
		var ce *Error
		if !errors.As(err, &ce) || ce.Call != "cuInit" {
			t.Errorf("driver present but: %v", err)
		}
	default:
		if d.Version < 11000 {
			t.Errorf("driver version %d", d.Version)
		}
	}
	if _, err := LoadNVRTC(); err != nil && !errors.Is(err, ErrLibraryNotFound) {
		t.Errorf("nvrtc: %v", err)
	}
	if _, err := LoadBLAS(); err != nil && !errors.Is(err, ErrLibraryNotFound) {
		t.Errorf("cublas: %v", err)
	}
	if _, err := LoadNCCL(); err != nil && !errors.Is(err, ErrLibraryNotFound) {
		t.Errorf("nccl: %v", err)
	}
}

// TestBindMechanics binds real functions of the C library through the same
// path the CUDA bindings use (bind + purego), and checks that a missing
// symbol is an error naming it, not a panic.
func TestBindMechanics(t *testing.T) {
	h, err := purego.Dlopen("libc.so.6", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		t.Skipf("no libc.so.6 to bind against: %v", err) // non-glibc host
	}
	var strlen func(s string) uintptr
	var abs func(v int32) int32
	if err := bind(h, "C library", "libc.so.6", []symbol{{"strlen", &strlen}, {"abs", &abs}}); err != nil {
		t.Fatal(err)
	}
	if n := strlen("fmtrain"); n != 7 {
		t.Errorf("strlen = %d", n)
	}
	if v := abs(-42); v != 42 {
		t.Errorf("abs = %d", v)
	}
	var missing func() int32
	err = bind(h, "C library", "libc.so.6", []symbol{{"cuMemAlloc_v2", &missing}})
	if err == nil || !strings.Contains(err.Error(), "no symbol cuMemAlloc_v2") {
		t.Errorf("missing symbol: %v", err)
	}
	if goString(nil) != "" {
		t.Error("goString(nil)")
	}
	b := []byte("abc\x00def")
	if s := goString(&b[0]); s != "abc" {
		t.Errorf("goString = %q", s)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Call: "cuMemAlloc_v2", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY"}
	if e.Error() != "cuda: cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (2)" {
		t.Errorf("%q", e.Error())
	}
	e = &Error{Call: "cublasGemmEx", Code: 7}
	if e.Error() != "cuda: cublasGemmEx: status 7" {
		t.Errorf("%q", e.Error())
	}
}

func TestCublasMapping(t *testing.T) {
	// Row-major C[m,n] = A[m,k]·B[n,k]^T  →  cuBLAS gets (B, A) with
	// transa = T (from TransB), transb = N, and m/n swapped.
	g := GemmOp{TransB: true, M: 3, N: 5, K: 7, A: 100, B: 200, Lda: 7, Ldb: 7, StrideA: 21, StrideB: 35}
	want := CublasArgs{TransA: true, TransB: false, M: 5, N: 3, K: 7, A: 200, B: 100, Lda: 7, Ldb: 7, StrideA: 35, StrideB: 21}
	if got := g.Cublas(); got != want {
		t.Errorf("Cublas() = %+v, want %+v", got, want)
	}
}

func TestAlignment(t *testing.T) {
	for p, want := range map[DevicePtr]uint32{0x7000000000: 256, 0x7000000100: 256, 0x7000000080: 128, 0x7000000004: 4, 0x7000000002: 2, 0x7000000001: 1, 0x7000000030: 16} {
		if got := Alignment(p); got != want {
			t.Errorf("Alignment(%#x) = %d, want %d", uintptr(p), got, want)
		}
	}
}

// TestRealLibraries binds every prototype against real CUDA libraries:
// make cuda-libs-check supplies Debian's driver userspace, cuBLAS(Lt) and
// NVRTC (FMTRAIN_CUDA_LIBS_CHECK=1); on a CUDA host the system's serve.
// Without a GPU cuInit must fail as a *Error with the driver's own name for
// the code, which proves the driver's symbols were all bound (binding comes
// first) and that calls through them work.
func TestRealLibraries(t *testing.T) {
	required := os.Getenv("FMTRAIN_CUDA_LIBS_CHECK") == "1"
	skipOrFail := func(what string, err error) {
		t.Helper()
		if required {
			t.Fatalf("%s: %v", what, err)
		}
		t.Skipf("%s not on this host (make cuda-libs-check runs this test with Debian's): %v", what, err)
	}
	d, err := LoadDriver()
	var ce *Error
	switch {
	case errors.Is(err, ErrLibraryNotFound):
		skipOrFail("CUDA driver", err)
	case errors.As(err, &ce):
		if ce.Call != "cuInit" || !strings.HasPrefix(ce.Name, "CUDA_ERROR_") {
			t.Errorf("driver bound but: %v", err)
		}
		if ce.Code == errNoDevice && !strings.Contains(err.Error(), "the driver sees no GPU") {
			t.Errorf("no-device error %q does not say so plainly", err)
		}
		t.Logf("driver bound; no GPU: %v", err)
	case err != nil:
		t.Fatalf("driver: %v", err)
	default:
		t.Logf("driver %d from %s", d.Version, d.Path)
	}
	b, err := LoadBLAS()
	if err != nil {
		skipOrFail("cuBLAS", err)
	}
	// The text differs between versions ("success", "CUBLAS_STATUS_SUCCESS").
	if s := b.f.cublasGetStatusString(blasSuccess); !strings.Contains(strings.ToLower(s), "success") {
		t.Errorf("cublasGetStatusString(0) = %q", s)
	}
	t.Logf("cuBLAS %s, cuBLASLt %s", b.Path, b.LtPath)
	n, err := LoadNVRTC()
	if err != nil {
		skipOrFail("NVRTC", err)
	}
	if n.Major < 11 {
		t.Errorf("NVRTC %d.%d", n.Major, n.Minor)
	}
	if e := n.check("nvrtcCompileProgram", 6); e.(*Error).Name != "NVRTC_ERROR_COMPILATION" {
		t.Errorf("nvrtcGetErrorString(6) = %q", e.(*Error).Name)
	}
	t.Logf("NVRTC %d.%d from %s", n.Major, n.Minor, n.Path)
}
