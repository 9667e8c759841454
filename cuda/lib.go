// Package cuda binds the parts of the CUDA driver API, cuBLAS, cuBLASLt,
// NVRTC and NCCL that fmtrain uses, loaded at run time with
// github.com/ebitengine/purego: no CUDA toolkit is needed to build, and a
// binary built here runs on a host without a driver (Load* return an error
// saying which library is missing and where it was looked for).
//
// Every C prototype bound here is written once, in prototypes.h; a test
// checks the Go bindings against it with reflect, and
// `make cuda-headers-check` compiles it against the real CUDA headers.
// Every call's status is checked and turned into an *Error naming the call.
//
// Concurrency: the loaded libraries are process-wide and safe to share. A
// Context must be current on the calling OS thread (Context.Bind, which
// locks the goroutine to its thread) before device calls; Stream, Module and
// handle values are used by one goroutine at a time.
package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ebitengine/purego"
)

// ErrLibraryNotFound is wrapped by Load* when a library cannot be loaded.
var ErrLibraryNotFound = errors.New("cuda: library not found")

// libSpec names one shared library and how to look for it.
type libSpec struct {
	// what is the human name used in errors ("CUDA driver").
	what string
	// stem is the file name before the version, e.g. "libcublas.so".
	stem string
	// majors are the sonames' versions to try, most preferred first; an
	// empty list means stem is the whole soname ("libcuda.so.1").
	majors []int
	// hint says how to get the library.
	hint string
}

var (
	specDriver = libSpec{what: "CUDA driver", stem: "libcuda.so.1", hint: "install the NVIDIA driver"}
	specCUBLAS = libSpec{what: "cuBLAS", stem: "libcublas.so", majors: []int{13, 12, 11}, hint: "install the CUDA toolkit's cuBLAS (or pip's nvidia-cublas) and set CUDA_HOME or LD_LIBRARY_PATH"}
	specLt     = libSpec{what: "cuBLASLt", stem: "libcublasLt.so", majors: []int{13, 12, 11}, hint: "install the CUDA toolkit's cuBLAS (or pip's nvidia-cublas) and set CUDA_HOME or LD_LIBRARY_PATH"}
	specNVRTC  = libSpec{what: "NVRTC", stem: "libnvrtc.so", majors: []int{13, 12, 11}, hint: "install the CUDA toolkit's NVRTC (or pip's nvidia-cuda-nvrtc) and set CUDA_HOME or LD_LIBRARY_PATH"}
	specNCCL   = libSpec{what: "NCCL", stem: "libnccl.so", majors: []int{2}, hint: "install NCCL (libnccl2, or pip's nvidia-nccl) and set LD_LIBRARY_PATH"}
)

// searchEnv is what library search reads from the outside world; tests
// replace it.
type searchEnv struct {
	getenv func(string) string
	glob   func(string) ([]string, error)
	open   func(path string) (uintptr, error)
}

var osSearchEnv = searchEnv{
	getenv: os.Getenv,
	glob:   filepath.Glob,
	open: func(path string) (uintptr, error) {
		return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	},
}

// searchDirs lists the folders tried after the plain soname (which lets the
// dynamic loader use its cache and the start-up LD_LIBRARY_PATH), in order.
// Globs are expanded; the pip-wheel folders let a Python environment's CUDA
// libraries serve when no toolkit is installed.
func searchDirs(env searchEnv) []string {
	var dirs []string
	for _, d := range strings.Split(env.getenv("LD_LIBRARY_PATH"), ":") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if h := env.getenv(v); h != "" {
			dirs = append(dirs, filepath.Join(h, "lib64"), filepath.Join(h, "lib"), filepath.Join(h, "targets/x86_64-linux/lib"))
		}
	}
	dirs = append(dirs,
		"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib",
		"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib",
	)
	for _, g := range []string{
		"/usr/local/lib/python3*/dist-packages/nvidia/*/lib",
		"/usr/lib/python3/dist-packages/nvidia/*/lib",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
	} {
		if m, err := env.glob(g); err == nil {
			sort.Strings(m)
			dirs = append(dirs, m...)
		}
	}
	return dirs
}

// candidates lists the file names to try for spec in dir, most preferred
// first: the known majors, then any other versioned file present (highest
// version first), then the unversioned development link.
func candidates(spec libSpec, dir string, env searchEnv) []string {
	if len(spec.majors) == 0 {
		return []string{filepath.Join(dir, spec.stem)}
	}
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, m := range spec.majors {
		add(filepath.Join(dir, spec.stem+"."+strconv.Itoa(m)))
	}
	if m, err := env.glob(filepath.Join(dir, spec.stem+".*")); err == nil {
		sort.Slice(m, func(i, j int) bool { return versionLess(m[j], m[i]) })
		for _, p := range m {
			add(p)
		}
	}
	add(filepath.Join(dir, spec.stem))
	return out
}

// versionLess orders "libx.so.12.1" before "libx.so.13" numerically.
func versionLess(a, b string) bool {
	va, vb := versionOf(a), versionOf(b)
	for i := 0; i < len(va) && i < len(vb); i++ {
		if va[i] != vb[i] {
			return va[i] < vb[i]
		}
	}
	return len(va) < len(vb)
}

func versionOf(p string) []int {
	_, rest, ok := strings.Cut(filepath.Base(p), ".so.")
	if !ok {
		return nil
	}
	var v []int
	for _, f := range strings.Split(rest, ".") {
		n, err := strconv.Atoi(f)
		if err != nil {
			break
		}
		v = append(v, n)
	}
	return v
}

// findLibrary opens spec: first by soname through the dynamic loader, then
// in each search folder. It returns the handle and the path that worked, or
// an error wrapping ErrLibraryNotFound that says what was tried.
func findLibrary(spec libSpec, env searchEnv) (uintptr, string, error) {
	var sonames []string
	if len(spec.majors) == 0 {
		sonames = []string{spec.stem}
	}
	for _, m := range spec.majors {
		sonames = append(sonames, spec.stem+"."+strconv.Itoa(m))
	}
	var firstErr error
	for _, s := range sonames {
		h, err := env.open(s)
		if err == nil {
			return h, s, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	dirs := searchDirs(env)
	for _, d := range dirs {
		for _, p := range candidates(spec, d, env) {
			if h, err := env.open(p); err == nil {
				return h, p, nil
			}
		}
	}
	return 0, "", fmt.Errorf("%w: the %s (%s) could not be loaded: %v; also looked in %d folders (LD_LIBRARY_PATH, CUDA_HOME, /usr/local/cuda, /usr/local/nvidia, the system and pip-wheel library folders); %s",
		ErrLibraryNotFound, spec.what, strings.Join(sonames, ", "), firstErr, len(dirs), spec.hint)
}

// symbol pairs a C name with a pointer to the Go function variable bound to it.
type symbol struct {
	name string
	fn   any
}

// bind resolves every symbol in lib and registers the Go functions. A
// missing symbol is an error naming it (an old library, usually).
func bind(lib uintptr, what, path string, syms []symbol) error {
	for _, s := range syms {
		addr, err := purego.Dlsym(lib, s.name)
		if err != nil || addr == 0 {
			return fmt.Errorf("cuda: %s (%s) has no symbol %s: the library is too old or not the one expected: %v", what, path, s.name, err)
		}
		purego.RegisterFunc(s.fn, addr)
	}
	return nil
}

// loadAndBind finds spec's library and binds syms in it.
func loadAndBind(spec libSpec, syms []symbol) (string, error) {
	h, path, err := findLibrary(spec, osSearchEnv)
	if err != nil {
		return "", err
	}
	if err := bind(h, spec.what, path, syms); err != nil {
		return "", err
	}
	return path, nil
}
