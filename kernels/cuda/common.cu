// common.cu: helpers shared by every fmtrain kernel. The .cu files of this
// folder are concatenated (common.cu first) into one NVRTC program, compiled
// for the device's architecture at start-up and cached on disk by source
// hash. No #include: NVRTC needs no CUDA headers for these kernels.
//
// Conventions (llm.c's, as kernels.Backend): row-major float32 tensors,
// outputs first; backward kernels accumulate (+=) into gradients. Every
// kernel is extern "C" so the host finds it by name, and every parameter is
// a pointer, int, long long or float (kernels/cuda checks each launch's
// arguments against these signatures before calling cuLaunchKernel).

#define FMT_INF __int_as_float(0x7f800000)

__device__ __forceinline__ float fmt_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float fmt_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// fmt_bf16 rounds to bfloat16, nearest-even (NaN stays a quiet NaN), and
// returns the 16 bits cuBLAS reads as CUDA_R_16BF.
__device__ __forceinline__ unsigned short fmt_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// Grid-stride loop index over n elements.
#define FMT_FOR(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Activation storage. The mixed-precision backend keeps forward's saved
// activations in bf16 (Backend.AllocActivations); a kernel that may read or
// write one takes an int `st` whose bit k says that tensor k (numbered in
// the kernel's comment) is bf16 rather than float32. The test is the same
// for every thread of a launch, so it costs no divergence.
__device__ __forceinline__ float fmt_ld(const void* p, long long i, int bf) {
    return bf ? __uint_as_float((unsigned int)((const unsigned short*)p)[i] << 16) : ((const float*)p)[i];
}

__device__ __forceinline__ void fmt_st(void* p, long long i, float v, int bf) {
    if (bf) ((unsigned short*)p)[i] = fmt_bf16(v);
    else ((float*)p)[i] = v;
}

// FMT_BF(st, k): is tensor k of a kernel's `st` bf16?
#define FMT_BF(st, k) (((st) >> (k)) & 1)
