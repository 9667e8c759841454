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
