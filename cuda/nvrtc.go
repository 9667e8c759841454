package cuda

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

const nvrtcSuccess = 0

// nvrtcFuncs are the bound libnvrtc entry points (see prototypes.h).
type nvrtcFuncs struct {
	nvrtcVersion           func(major, minor *int32) int32
	nvrtcGetErrorString    func(r int32) string
	nvrtcCreateProgram     func(p *uintptr, src, name string, nHeaders int32, headers, includeNames **byte) int32
	nvrtcDestroyProgram    func(p *uintptr) int32
	nvrtcCompileProgram    func(p uintptr, nOpts int32, opts **byte) int32
	nvrtcGetProgramLogSize func(p uintptr, n *uintptr) int32
	nvrtcGetProgramLog     func(p uintptr, log *byte) int32
	nvrtcGetPTXSize        func(p uintptr, n *uintptr) int32
	nvrtcGetPTX            func(p uintptr, ptx *byte) int32
	nvrtcGetCUBINSize      func(p uintptr, n *uintptr) int32
	nvrtcGetCUBIN          func(p uintptr, cubin *byte) int32
}

func (f *nvrtcFuncs) symbols() []symbol {
	return []symbol{
		{"nvrtcVersion", &f.nvrtcVersion},
		{"nvrtcGetErrorString", &f.nvrtcGetErrorString},
		{"nvrtcCreateProgram", &f.nvrtcCreateProgram},
		{"nvrtcDestroyProgram", &f.nvrtcDestroyProgram},
		{"nvrtcCompileProgram", &f.nvrtcCompileProgram},
		{"nvrtcGetProgramLogSize", &f.nvrtcGetProgramLogSize},
		{"nvrtcGetProgramLog", &f.nvrtcGetProgramLog},
		{"nvrtcGetPTXSize", &f.nvrtcGetPTXSize},
		{"nvrtcGetPTX", &f.nvrtcGetPTX},
		{"nvrtcGetCUBINSize", &f.nvrtcGetCUBINSize},
		{"nvrtcGetCUBIN", &f.nvrtcGetCUBIN},
	}
}

// NVRTC is the loaded run-time compiler (one per process).
type NVRTC struct {
	f            nvrtcFuncs
	Path         string
	Major, Minor int
}

var (
	nvrtcOnce sync.Once
	nvrtcVal  *NVRTC
	nvrtcErr  error
)

// LoadNVRTC loads libnvrtc once per process.
func LoadNVRTC() (*NVRTC, error) {
	nvrtcOnce.Do(func() {
		n := &NVRTC{}
		if n.Path, nvrtcErr = loadAndBind(specNVRTC, n.f.symbols()); nvrtcErr != nil {
			return
		}
		var ma, mi int32
		if nvrtcErr = n.check("nvrtcVersion", n.f.nvrtcVersion(&ma, &mi)); nvrtcErr != nil {
			return
		}
		n.Major, n.Minor = int(ma), int(mi)
		nvrtcVal = n
	})
	return nvrtcVal, nvrtcErr
}

func (n *NVRTC) check(call string, r int32) error {
	if r == nvrtcSuccess {
		return nil
	}
	e := &Error{Call: call, Code: int(r)}
	if n.f.nvrtcGetErrorString != nil {
		e.Name = n.f.nvrtcGetErrorString(r)
	}
	return e
}

// cStrings returns NUL-terminated copies of ss and an array of pointers to
// them; keep both alive across the call.
func cStrings(ss []string) ([][]byte, []*byte) {
	bufs := make([][]byte, len(ss))
	ptrs := make([]*byte, len(ss)+1)
	for i, s := range ss {
		bufs[i] = append([]byte(s), 0)
		ptrs[i] = &bufs[i][0]
	}
	return bufs, ptrs
}

// CompileError is a compilation that failed; Log is NVRTC's program log.
type CompileError struct {
	Name string
	Err  error
	Log  string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("cuda: compiling %s: %v\n%s", e.Name, e.Err, strings.TrimSpace(e.Log))
}

func (e *CompileError) Unwrap() error { return e.Err }

// Compile compiles CUDA C source. With cubin it returns a CUBIN (options
// must name a real architecture, -arch=sm_NN), else NUL-terminated PTX
// (-arch=compute_NN). The log is returned too (warnings).
func (n *NVRTC) Compile(src, name string, options []string, cubin bool) (image []byte, log string, err error) {
	var prog uintptr
	if err := n.check("nvrtcCreateProgram", n.f.nvrtcCreateProgram(&prog, src, name, 0, nil, nil)); err != nil {
		return nil, "", err
	}
	defer n.f.nvrtcDestroyProgram(&prog)
	bufs, ptrs := cStrings(options)
	r := n.f.nvrtcCompileProgram(prog, int32(len(options)), &ptrs[0])
	runtime.KeepAlive(bufs)
	var logSize uintptr
	if n.f.nvrtcGetProgramLogSize(prog, &logSize) == nvrtcSuccess && logSize > 1 {
		b := make([]byte, logSize)
		if n.f.nvrtcGetProgramLog(prog, &b[0]) == nvrtcSuccess {
			log = string(b[:logSize-1])
		}
	}
	if err := n.check("nvrtcCompileProgram", r); err != nil {
		return nil, log, &CompileError{Name: name, Err: err, Log: log}
	}
	sizeCall, getCall := "nvrtcGetPTXSize", "nvrtcGetPTX"
	getSize, get := n.f.nvrtcGetPTXSize, n.f.nvrtcGetPTX
	if cubin {
		sizeCall, getCall = "nvrtcGetCUBINSize", "nvrtcGetCUBIN"
		getSize, get = n.f.nvrtcGetCUBINSize, n.f.nvrtcGetCUBIN
	}
	var size uintptr
	if err := n.check(sizeCall, getSize(prog, &size)); err != nil {
		return nil, log, err
	}
	if size == 0 {
		return nil, log, fmt.Errorf("cuda: %s: %s returned an empty image", name, sizeCall)
	}
	image = make([]byte, size)
	if err := n.check(getCall, get(prog, (*byte)(unsafe.Pointer(&image[0])))); err != nil {
		return nil, log, err
	}
	return image, log, nil
}
