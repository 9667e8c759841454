package cuda

import (
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// cProto is one parsed prototype of prototypes.h.
type cProto struct {
	ret    string
	params []string // C types, names stripped
}

var (
	commentRE = regexp.MustCompile(`(?s)/\*.*?\*/`)
	protoRE   = regexp.MustCompile(`^(.*?)\b(\w+)\((.*)\)$`)
	constRE   = regexp.MustCompile(`^FMT_CONST\((\w+),\s*(-?\d+)\)$`)
	identRE   = regexp.MustCompile(`\w+$`)
)

// parsePrototypes reads prototypes.h: the prototypes by name and the
// pinned constants.
func parsePrototypes(t *testing.T) (map[string]cProto, map[string]int) {
	t.Helper()
	src, err := os.ReadFile("prototypes.h")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(commentRE.ReplaceAllString(string(src), ""), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			lines = append(lines, l)
		}
	}
	protos := map[string]cProto{}
	consts := map[string]int{}
	for _, stmt := range strings.Split(strings.Join(lines, " "), ";") {
		stmt = strings.Join(strings.Fields(stmt), " ")
		if stmt == "" || strings.HasPrefix(stmt, "_Static_assert") {
			continue
		}
		if m := constRE.FindStringSubmatch(stmt); m != nil {
			v, _ := strconv.Atoi(m[2])
			consts[m[1]] = v
			continue
		}
		m := protoRE.FindStringSubmatch(stmt)
		if m == nil {
			t.Fatalf("prototypes.h: cannot parse %q", stmt)
		}
		p := cProto{ret: strings.TrimSpace(m[1])}
		if args := strings.TrimSpace(m[3]); args != "void" {
			for _, a := range strings.Split(args, ",") {
				a = strings.TrimSpace(a)
				p.params = append(p.params, strings.TrimSpace(identRE.ReplaceAllString(a, "")))
			}
		}
		if _, dup := protos[m[2]]; dup {
			t.Fatalf("prototypes.h: %s declared twice", m[2])
		}
		protos[m[2]] = p
	}
	return protos, consts
}

var (
	int32Types = map[string]bool{"int": true, "CUdevice": true, "CUresult": true, "CUdevice_attribute": true, "CUfunction_attribute": true,
		"cublasStatus_t": true, "cublasOperation_t": true, "cudaDataType": true, "cudaDataType_t": true, "cublasComputeType_t": true,
		"cublasGemmAlgo_t": true, "cublasMath_t": true, "cublasLtMatmulDescAttributes_t": true, "cublasLtMatmulPreferenceAttributes_t": true,
		"nvrtcResult": true, "ncclResult_t": true, "ncclDataType_t": true, "ncclRedOp_t": true}
	handleTypes = map[string]bool{"CUcontext": true, "CUstream": true, "cudaStream_t": true, "CUevent": true, "CUmodule": true, "CUfunction": true,
		"cublasHandle_t": true, "cublasLtHandle_t": true, "cublasLtMatmulDesc_t": true, "cublasLtMatrixLayout_t": true,
		"cublasLtMatmulPreference_t": true, "nvrtcProgram": true, "ncclComm_t": true, "CUdeviceptr": true, "size_t": true}
)

// goKindFits says whether Go type g can carry C type c under the
// SysV/AAPCS64 calling conventions purego uses.
func goKindFits(c string, g reflect.Type) bool {
	switch {
	case c == "const char *":
		return g.Kind() == reflect.String || g == reflect.TypeOf((*byte)(nil))
	case strings.Count(c, "*") >= 2:
		// A host pointer to pointers, or a device address of a pointer array.
		return g.Kind() == reflect.Pointer && g.Elem().Kind() == reflect.Pointer || g == reflect.TypeOf((*unsafe.Pointer)(nil)) || g.Kind() == reflect.Uintptr
	case strings.Contains(c, "*"):
		return g.Kind() == reflect.Pointer || g.Kind() == reflect.UnsafePointer || g.Kind() == reflect.Uintptr
	case int32Types[c]:
		return g.Kind() == reflect.Int32
	case handleTypes[c]:
		return g.Kind() == reflect.Uintptr
	case c == "unsigned int":
		return g.Kind() == reflect.Uint32
	case c == "float":
		return g.Kind() == reflect.Float32
	case c == "uint64_t":
		return g.Kind() == reflect.Uint64
	case c == "int64_t", c == "long long int":
		return g.Kind() == reflect.Int64
	case c == "ncclUniqueId":
		return g.Kind() == reflect.Struct && g.Size() == 128
	}
	return false
}

func allBindings() map[string][]symbol {
	return map[string][]symbol{
		"driver":   (&driverFuncs{}).symbols(),
		"cublas":   (&blasFuncs{}).symbols(),
		"cublasLt": (&ltFuncs{}).symbols(),
		"nvrtc":    (&nvrtcFuncs{}).symbols(),
		"nccl":     (&ncclFuncs{}).symbols(),
	}
}

// TestBindingsMatchPrototypes checks every Go binding against the one C
// prototype file: same symbols both ways, argument counts and kinds.
func TestBindingsMatchPrototypes(t *testing.T) {
	protos, _ := parsePrototypes(t)
	if len(protos) < 70 {
		t.Fatalf("parsed only %d prototypes", len(protos))
	}
	bound := map[string]bool{}
	for lib, syms := range allBindings() {
		for _, s := range syms {
			bound[s.name] = true
			p, ok := protos[s.name]
			if !ok {
				t.Errorf("%s: %s is bound but not in prototypes.h", lib, s.name)
				continue
			}
			ft := reflect.TypeOf(s.fn).Elem()
			if ft.NumIn() != len(p.params) {
				t.Errorf("%s: Go binding has %d arguments, C has %d (%v)", s.name, ft.NumIn(), len(p.params), p.params)
				continue
			}
			for i, c := range p.params {
				if !goKindFits(c, ft.In(i)) {
					t.Errorf("%s: argument %d: C %q is bound as Go %v", s.name, i, c, ft.In(i))
				}
			}
			switch {
			case ft.NumOut() != 1:
				t.Errorf("%s: Go binding returns %d values", s.name, ft.NumOut())
			case p.ret == "const char *" && ft.Out(0).Kind() != reflect.String:
				t.Errorf("%s: returns C string, bound as %v", s.name, ft.Out(0))
			case p.ret != "const char *" && ft.Out(0).Kind() != reflect.Int32:
				t.Errorf("%s: returns %s, bound as %v", s.name, p.ret, ft.Out(0))
			}
		}
	}
	for name := range protos {
		if !bound[name] {
			t.Errorf("prototypes.h declares %s but nothing binds it", name)
		}
	}
}

// TestConstantsMatchPrototypes checks the Go constants against the values
// prototypes.h pins (which the header check asserts against the headers).
func TestConstantsMatchPrototypes(t *testing.T) {
	_, consts := parsePrototypes(t)
	goVals := map[string]int{
		"CUDA_SUCCESS": cudaSuccess, "CUDA_ERROR_NO_DEVICE": errNoDevice,
		"CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT": attrMultiprocessorCount, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": attrComputeCapabilityMajor,
		"CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": attrComputeCapabilityMinor, "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": attrMaxSharedMemoryPerBlockOptin,
		"CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS": attrConcurrentManagedAccess, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES": funcAttrMaxDynamicSharedSizeBytes,
		"CU_MEM_ATTACH_GLOBAL": memAttachGlobal, "CU_STREAM_NON_BLOCKING": streamNonBlocking, "CU_EVENT_DEFAULT": eventDefault,
		"CUBLAS_STATUS_SUCCESS": blasSuccess, "CUBLAS_OP_N": blasOpN, "CUBLAS_OP_T": blasOpT, "CUBLAS_DEFAULT_MATH": blasDefaultMath,
		"CUBLAS_PEDANTIC_MATH": blasPedanticMath, "CUDA_R_32F": int(R32F), "CUDA_R_16BF": int(R16BF), "CUBLAS_COMPUTE_32F": computeType32F,
		"CUBLAS_COMPUTE_32F_PEDANTIC": computeType32FPedantic, "CUBLAS_GEMM_DEFAULT": gemmDefault,
		"CUBLASLT_MATMUL_DESC_TRANSA": ltDescTransA, "CUBLASLT_MATMUL_DESC_TRANSB": ltDescTransB, "CUBLASLT_MATMUL_DESC_EPILOGUE": ltDescEpilogue,
		"CUBLASLT_MATMUL_DESC_BIAS_POINTER": ltDescBiasPointer, "CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE": ltDescBiasDataType,
		"CUBLASLT_EPILOGUE_DEFAULT": ltEpilogueDefault, "CUBLASLT_EPILOGUE_BIAS": ltEpilogueBias, "CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES": ltPrefMaxWorkspaceBytes,
		"CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES": ltPrefMinAlignmentC, "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES": ltPrefMinAlignmentD,
		"NVRTC_SUCCESS": nvrtcSuccess, "ncclSuccess": ncclSuccess, "ncclInProgress": ncclInProgress, "ncclFloat32": NCCLFloat32,
		"ncclSum": NCCLSum, "ncclAvg": NCCLAvg, "NCCL_UNIQUE_ID_BYTES": UniqueIDBytes,
	}
	for name, v := range consts {
		g, ok := goVals[name]
		if !ok {
			t.Errorf("prototypes.h pins %s but the Go side has no constant for it", name)
		} else if g != v {
			t.Errorf("%s: Go %d, prototypes.h %d", name, g, v)
		}
	}
	for name := range goVals {
		if _, ok := consts[name]; !ok {
			t.Errorf("Go constant for %s is not pinned in prototypes.h", name)
		}
	}
	if unsafe.Sizeof(UniqueID{}) != UniqueIDBytes {
		t.Errorf("UniqueID is %d bytes", unsafe.Sizeof(UniqueID{}))
	}
}

// TestHeaderCheckTarget makes sure the header check stays wired: the make
// target, its script, and the C file that includes prototypes.h after the
// real headers.
func TestHeaderCheckTarget(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^cuda-headers-check:\n\t.*scripts/cuda-headers-check\.sh`).Match(mk) {
		t.Error("Makefile has no cuda-headers-check target running scripts/cuda-headers-check.sh")
	}
	sh, err := os.ReadFile("../scripts/cuda-headers-check.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nvidia-cuda-dev", "non-free", "cuda/headercheck/check.c", "-Werror"} {
		if !strings.Contains(string(sh), want) {
			t.Errorf("cuda-headers-check.sh does not mention %q", want)
		}
	}
	c, err := os.ReadFile("headercheck/check.c")
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"<cuda.h>", "<cublas_v2.h>", "<cublasLt.h>", "<nvrtc.h>", `"../prototypes.h"`}
	last := -1
	for _, inc := range order {
		i := strings.Index(string(c), inc)
		if i <= last {
			t.Errorf("check.c must include %s after the previous headers", inc)
		}
		last = i
	}
}
