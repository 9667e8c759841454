package cuda

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed *.cu
var cuFiles embed.FS

// programSource concatenates the embedded .cu files into one NVRTC
// program: common.cu first (the helpers), then the others by name. Each
// file is preceded by a #line directive so compiler messages name it.
func programSource() (string, error) {
	names, err := fs.Glob(cuFiles, "*.cu")
	if err != nil {
		return "", err
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "common.cu") != (names[j] == "common.cu") {
			return names[i] == "common.cu"
		}
		return names[i] < names[j]
	})
	var b strings.Builder
	for _, n := range names {
		src, err := cuFiles.ReadFile(n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "#line 1 %q\n%s\n", n, src)
	}
	return b.String(), nil
}

// compiler is what buildModule needs from NVRTC (cu.NVRTC in production).
type compiler interface {
	Compile(src, name string, options []string, cubin bool) ([]byte, string, error)
}

// compileTarget is one way to build the program for a device.
type compileTarget struct {
	options []string
	cubin   bool
	ext     string
}

// targets lists the builds to try for compute capability major.minor:
// machine code for the exact architecture first (no JIT at load), then PTX
// for the same virtual architecture (the driver JIT-compiles it), which
// also serves when this NVRTC is older than the GPU.
func targets(major, minor int) []compileTarget {
	arch := fmt.Sprintf("%d%d", major, minor)
	common := []string{"--std=c++17", "--fmad=true"}
	return []compileTarget{
		{options: append([]string{"--gpu-architecture=sm_" + arch}, common...), cubin: true, ext: ".cubin"},
		{options: append([]string{"--gpu-architecture=compute_" + arch}, common...), cubin: false, ext: ".ptx"},
	}
}

// cacheKey names a compiled image: it changes with the source, the options
// (hence the architecture), the output kind and the compiler version.
func cacheKey(src string, t compileTarget, compilerVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "fmtrain-nvrtc-v1\x00%s\x00%s\x00%v\x00", compilerVersion, strings.Join(t.options, "\x00"), t.cubin)
	h.Write([]byte(src))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// readCache returns a cached image if the file exists and its checksum
// (the first 32 bytes: sha256 of the rest) matches.
func readCache(path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) <= sha256.Size {
		return nil, false
	}
	sum := sha256.Sum256(b[sha256.Size:])
	if !bytes.Equal(sum[:], b[:sha256.Size]) {
		return nil, false
	}
	return b[sha256.Size:], true
}

// writeCache stores image atomically (temp file + rename) with its checksum.
func writeCache(path string, image []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	sum := sha256.Sum256(image)
	_, err1 := tmp.Write(sum[:])
	_, err2 := tmp.Write(image)
	err3 := tmp.Close()
	if err := errors.Join(err1, err2, err3); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// built is the result of buildModule.
type built struct {
	image     []byte
	target    compileTarget
	cachePath string
	fromCache bool
}

// buildModule returns the program compiled for the device, from the disk
// cache when present (cacheDir "" disables the cache). loadOK, when not
// nil, vets an image (cuModuleLoadData); a cached image it rejects is
// rebuilt, and a target whose fresh image it rejects falls through to the
// next target.
func buildModule(c compiler, compilerVersion, cacheDir, src string, major, minor int, loadOK func([]byte) error) (built, error) {
	var errs []error
	for _, t := range targets(major, minor) {
		path := ""
		if cacheDir != "" {
			path = filepath.Join(cacheDir, cacheKey(src, t, compilerVersion)+t.ext)
			if img, ok := readCache(path); ok && (loadOK == nil || loadOK(img) == nil) {
				return built{image: img, target: t, cachePath: path, fromCache: true}, nil
			}
		}
		img, _, err := c.Compile(src, "fmtrain_kernels.cu", t.options, t.cubin)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.options[0], err))
			continue
		}
		if loadOK != nil {
			if err := loadOK(img); err != nil {
				errs = append(errs, fmt.Errorf("%s: loading the compiled image: %w", t.options[0], err))
				continue
			}
		}
		if path != "" {
			if err := writeCache(path, img); err != nil {
				// A read-only cache costs start-up time, not correctness.
				path = ""
			}
		}
		return built{image: img, target: t, cachePath: path}, nil
	}
	return built{}, fmt.Errorf("kernels/cuda: compiling the kernels for compute capability %d.%d failed: %w", major, minor, errors.Join(errs...))
}

// defaultCacheDir is $FMTRAIN_CUDA_CACHE, else <user cache>/fmtrain/nvrtc.
func defaultCacheDir() string {
	if d := os.Getenv("FMTRAIN_CUDA_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "fmtrain", "nvrtc")
	}
	return filepath.Join(os.TempDir(), "fmtrain-nvrtc")
}
