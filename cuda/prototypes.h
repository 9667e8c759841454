/*
 * prototypes.h: every C function and constant fmtrain calls in the CUDA
 * driver, cuBLAS, cuBLASLt, NVRTC and NCCL, written once, here.
 *
 * Two checks keep this file honest:
 *  - `make cuda-headers-check` includes the real cuda.h, cublas_v2.h,
 *    cublasLt.h and nvrtc.h (Debian's nvidia-cuda-dev) and then this file:
 *    a prototype whose types differ from the real one is a "conflicting
 *    types" error, and each FMT_CONST is a _Static_assert against the
 *    header's value.
 *  - cuda/prototypes_test.go parses this file and checks, with reflect, that
 *    every Go binding (purego) has the same symbol, argument count and
 *    argument kinds (int32 for int/enums, uint32 for unsigned int, uintptr
 *    for size_t/CUdeviceptr/handles, pointers as unsafe.Pointer, *T, uintptr
 *    or string, float32 for float, a 128-byte struct for ncclUniqueId).
 *
 * Only explicitly versioned driver symbols are used where the driver has
 * versions (cuMemAlloc_v2, cuMemFree_v2, cuStreamDestroy_v2, ...), and only
 * the primary context (cuCtxCreate changed in CUDA 13), so one binary works
 * with CUDA 12 and 13 drivers. Format: one declaration per line group,
 * ending in ");". FMT_CONST(NAME, VALUE) lines pin enum values we pass.
 */
#ifndef FMT_CONST
#define FMT_CONST(name, value) _Static_assert((name) == (value), #name " changed value")
#endif

/* ---- CUDA driver (libcuda.so.1) ---- */
CUresult cuInit(unsigned int Flags);
CUresult cuDriverGetVersion(int *driverVersion);
CUresult cuGetErrorName(CUresult error, const char **pStr);
CUresult cuGetErrorString(CUresult error, const char **pStr);
CUresult cuDeviceGetCount(int *count);
CUresult cuDeviceGet(CUdevice *device, int ordinal);
CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId);
CUresult cuDeviceGetName(char *name, int len, CUdevice dev);
CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev);
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev);
CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuCtxSynchronize(void);
CUresult cuMemGetInfo_v2(size_t *free, size_t *total);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize);
CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount);
CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream);
CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream);
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream);
CUresult cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream);
CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags);
CUresult cuStreamDestroy_v2(CUstream hStream);
CUresult cuStreamSynchronize(CUstream hStream);
CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags);
CUresult cuEventDestroy_v2(CUevent hEvent);
CUresult cuEventRecord(CUevent hEvent, CUstream hStream);
CUresult cuEventSynchronize(CUevent hEvent);
CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd);
CUresult cuModuleLoadData(CUmodule *module, const void *image);
CUresult cuModuleUnload(CUmodule hmod);
CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name);
CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value);
CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra);

FMT_CONST(CUDA_SUCCESS, 0);
FMT_CONST(CUDA_ERROR_NO_DEVICE, 100);
FMT_CONST(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 16);
FMT_CONST(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 75);
FMT_CONST(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 76);
FMT_CONST(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 97);
FMT_CONST(CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, 89);
FMT_CONST(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 8);
FMT_CONST(CU_MEM_ATTACH_GLOBAL, 1);
FMT_CONST(CU_STREAM_NON_BLOCKING, 1);
FMT_CONST(CU_EVENT_DEFAULT, 0);

/* ---- cuBLAS (libcublas.so.N) ---- */
cublasStatus_t cublasCreate_v2(cublasHandle_t *handle);
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle);
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t workspaceSizeInBytes);
const char *cublasGetStatusString(cublasStatus_t status);
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B, cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void *alpha, const void *const *Aarray, cudaDataType Atype, int lda, const void *const *Barray, cudaDataType Btype, int ldb, const void *beta, void *const *Carray, cudaDataType Ctype, int ldc, int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb, long long int strideB, const void *beta, void *C, cudaDataType Ctype, int ldc, long long int strideC, int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo);

FMT_CONST(CUBLAS_STATUS_SUCCESS, 0);
FMT_CONST(CUBLAS_OP_N, 0);
FMT_CONST(CUBLAS_OP_T, 1);
FMT_CONST(CUBLAS_DEFAULT_MATH, 0);
FMT_CONST(CUBLAS_PEDANTIC_MATH, 2);
FMT_CONST(CUDA_R_32F, 0);
FMT_CONST(CUDA_R_16BF, 14);
FMT_CONST(CUBLAS_COMPUTE_32F, 68);
FMT_CONST(CUBLAS_COMPUTE_32F_PEDANTIC, 69);
FMT_CONST(CUBLAS_GEMM_DEFAULT, -1);

/* ---- cuBLASLt (libcublasLt.so.N) ---- */
cublasStatus_t cublasLtCreate(cublasLtHandle_t *lightHandle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc, cublasComputeType_t computeType, cudaDataType_t scaleType);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t sizeInBytes);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void *buf, size_t sizeInBytes);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc, cublasLtMatmulPreference_t preference, int requestedAlgoCount, cublasLtMatmulHeuristicResult_t *heuristicResultsArray, int *returnAlgoCount);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D, cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspaceSizeInBytes, cudaStream_t stream);

FMT_CONST(CUBLASLT_MATMUL_DESC_TRANSA, 3);
FMT_CONST(CUBLASLT_MATMUL_DESC_TRANSB, 4);
FMT_CONST(CUBLASLT_MATMUL_DESC_EPILOGUE, 7);
FMT_CONST(CUBLASLT_MATMUL_DESC_BIAS_POINTER, 8);
FMT_CONST(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, 26);
FMT_CONST(CUBLASLT_EPILOGUE_DEFAULT, 1);
FMT_CONST(CUBLASLT_EPILOGUE_BIAS, 4);
FMT_CONST(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, 1);
FMT_CONST(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, 7);
FMT_CONST(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, 8);
_Static_assert(sizeof(cublasLtMatmulHeuristicResult_t) == 96, "cublasLtMatmulHeuristicResult_t size changed");
_Static_assert(sizeof(cublasLtMatmulAlgo_t) == 64, "cublasLtMatmulAlgo_t size changed");

/* ---- NVRTC (libnvrtc.so.N) ---- */
nvrtcResult nvrtcVersion(int *major, int *minor);
const char *nvrtcGetErrorString(nvrtcResult result);
nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name, int numHeaders, const char *const *headers, const char *const *includeNames);
nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog);
nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, const char *const *options);
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *logSizeRet);
nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log);
nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t *ptxSizeRet);
nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char *ptx);
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *cubinSizeRet);
nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *cubin);

FMT_CONST(NVRTC_SUCCESS, 0);

/* ---- NCCL (libnccl.so.2) ----
 * Debian ships no nccl.h (no libnccl-dev in bookworm main/contrib/non-free),
 * so the header check compiles this section only when nccl.h is found
 * (NCCL_INCLUDE=dir). */
#ifdef FMTRAIN_CHECK_NCCL
ncclResult_t ncclGetVersion(int *version);
const char *ncclGetErrorString(ncclResult_t result);
ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError);
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);

FMT_CONST(ncclSuccess, 0);
FMT_CONST(ncclInProgress, 7);
FMT_CONST(ncclFloat32, 7);
FMT_CONST(ncclSum, 0);
FMT_CONST(ncclAvg, 4);
FMT_CONST(NCCL_UNIQUE_ID_BYTES, 128);
#endif
