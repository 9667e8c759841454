/* check.c: compiles cuda/prototypes.h against the real CUDA headers (see
 * scripts/cuda-headers-check.sh). A prototype that differs from the
 * header's is a "conflicting types" error; a pinned constant that differs is
 * a failed _Static_assert. */
#include <stdint.h>
#include <cuda.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <nvrtc.h>
#ifdef FMTRAIN_CHECK_NCCL
#include <nccl.h>
#endif
#include "../prototypes.h"

int main(void) { return 0; }
