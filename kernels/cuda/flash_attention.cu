// flash_attention.cu: fused multi-head attention in the FlashAttention-2
// structure. No [Nq, Nk] score matrix reaches global memory: a block owns a
// tile of query rows (forward, dQ) or of keys (dK/dV), streams the other
// side through shared memory tile by tile, and keeps its running softmax
// statistics and output accumulators in registers.
//
// Layout is kernels.AttentionDims': sample b, token i, head h of q starts at
// q[(b*Nq + i)*qrow + h*hd] (k, v, o alike with their own row strides), the
// mask is [B, Nk] with 0 = key dropped (null: keep all), lse is
// [B, heads, Nq]. A block is blockIdx.x = bh*tiles + tile with bh = b*heads+h,
// so consecutive blocks share one (b, h) and its K/V stay in L2.
//
// Head dims: each kernel is instantiated for a padded head dim HDP of 32,
// 64, 80 (bench-L's and DiT-XL's 72), 96 or 128 (the host picks the
// smallest HDP >= hd and falls back to the cuBLAS path above 128; HDP must
// be a multiple of 16). Tiles hold HDP columns, the ones past hd zero, so
// every inner product runs over HDP with no bounds test; rows past Nq or Nk
// are zero too and get probability 0.
//
// Storage: st (common.cu's FMT_BF) says which tensors are bf16 in memory
// rather than float32: bit 0 O (the forward's output, rounded to bf16 as it
// is stored), bit 1 Q, bit 2 K, bit 3 V. Offsets and row strides count
// elements either way. dO, the gradients, lse, D and mask are always
// float32.
//
// Precision: bf16 != 0 (the mixed-precision backend) rounds Q, K, V and dO
// to bf16 as they are loaded, and P and dS before they enter a product: the
// operands the cuBLAS path rounds, in the same places. Every product of two
// bf16 values is exact in fp32, and all accumulation is fp32 FMA, so the
// arithmetic is that of a bf16 tensor-core product with fp32 accumulation.
// The inner products are the fa_*_mm functions, written so that mma.sync or
// wgmma fragments can replace them without touching the softmax logic.
//
// Shared memory: tiles are fp32 with rows padded by one float (HDP+1, BC+1)
// so that the column walks of the inner products hit distinct banks. The
// largest instantiation (HDP 128) needs about 116 KB, so the host opts in to
// more than 48 KB per block (cuFuncSetAttribute); kernels/cuda/launch.go's
// flashShared computes the same sizes.
//
// Backward is deterministic (no atomics): one kernel per key tile
// accumulates dK and dV over every query tile, a second one per query tile
// accumulates dQ over every key tile. Both recompute P from Q, K and lse,
// and dP from dO and V (7 tile products in all, against 5 with atomics), and
// D = rowsum(dO * O) comes from attn_rowdot beforehand. Gradients are added
// (+=) to dq, dk, dv; a null gradient pointer is skipped.

#define FA_THREADS 128
#define FA_BR 64     // query rows per tile, every kernel
#define FA_BC_FWD 64 // keys per tile, forward
#define FA_BC_BWD 32 // keys per tile, backward

extern __shared__ float fa_smem[];

__device__ __forceinline__ float fa_round(float v, int bf16) {
    return bf16 ? __uint_as_float((unsigned int)fmt_bf16(v) << 16) : v;
}

// fa_load_tile: rows [row0, row0+rows) of one head (the head's first element
// of token 0 at element base of src, stored as bf16 when sbf, else float32)
// into tile [rows][HDP+1]; zero past n rows and past hd columns;
// bf16-rounded when asked. All threads of the block.
template <int HDP>
__device__ __forceinline__ void fa_load_tile(float* tile, int rows, const void* src, int sbf, long long base, int row0, int n, int hd, int rowStride, int bf16) {
    for (int idx = threadIdx.x; idx < rows * HDP; idx += FA_THREADS) {
        int r = idx / HDP, c = idx % HDP;
        float v = 0.0f;
        if (row0 + r < n && c < hd) v = fa_round(fmt_ld(src, base + (long long)(row0 + r) * rowStride + c, sbf), bf16);
        tile[r * (HDP + 1) + c] = v;
    }
}

// fa_load_row_stats: lse and D of query rows [row0, row0+FA_BR) of (b, h) row
// block rowBase = (b*heads + h)*Nq into shared memory; rows past Nq get
// lse = +inf (so probability 0) and D = 0.
__device__ __forceinline__ void fa_load_row_stats(float* sL, float* sD, const float* lse, const float* D, long long rowBase, int row0, int Nq) {
    for (int r = threadIdx.x; r < FA_BR; r += FA_THREADS) {
        bool in = row0 + r < Nq;
        sL[r] = in ? lse[rowBase + row0 + r] : FMT_INF;
        sD[r] = in ? D[rowBase + row0 + r] : 0.0f;
    }
}

// fa_keep: key j of the sample is in range and not masked.
__device__ __forceinline__ bool fa_keep(const float* mk, int j, int Nk) {
    return j < Nk && (!mk || mk[j] != 0.0f);
}

// fa_score_mm: the thread's RM x CM block of A * B^T for shared tiles A
// [rows][HDP+1] and B [keys][HDP+1]: acc[i][j] = sum_c A[ty + TY*i][c] *
// B[tx + TX*j][c].
template <int HDP, int RM, int CM, int TX, int TY>
__device__ __forceinline__ void fa_score_mm(float acc[RM][CM], const float* A, const float* B, int tx, int ty) {
    constexpr int LD = HDP + 1;
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < CM; j++) acc[i][j] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < HDP; c++) {
        float a[RM], b[CM];
#pragma unroll
        for (int i = 0; i < RM; i++) a[i] = A[(ty + TY * i) * LD + c];
#pragma unroll
        for (int j = 0; j < CM; j++) b[j] = B[(tx + TX * j) * LD + c];
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < CM; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// fa_value_mm: acc[i][d] += sum_j W[row_i][j] * X[j][tx + TX*d] for the
// thread's rows row_i = ty + TY*i, weights W [rows][K+1] and values X
// [K][HDP+1] in shared memory (O += P V, dQ += dS K).
template <int HDP, int K, int RM, int TX, int TY>
__device__ __forceinline__ void fa_value_mm(float acc[RM][HDP / TX], const float* W, const float* X, int tx, int ty) {
    constexpr int LD = HDP + 1, WLD = K + 1, DM = HDP / TX;
#pragma unroll 4
    for (int j = 0; j < K; j++) {
        float w[RM], x[DM];
#pragma unroll
        for (int i = 0; i < RM; i++) w[i] = W[(ty + TY * i) * WLD + j];
#pragma unroll
        for (int d = 0; d < DM; d++) x[d] = X[j * LD + tx + TX * d];
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int d = 0; d < DM; d++) acc[i][d] = fmaf(w[i], x[d], acc[i][d]);
    }
}

// fa_forward: one block per FA_BR query rows of one (b, h). Thread (tx, ty)
// = (tid % 16, tid / 16) owns rows ty + 8i (i < 8): keys tx + 16j (j < 4)
// of each score tile and head dims tx + 16d (d < HDP/16) of the output; the
// 16 threads of a row are one half-warp, which reduces the row's max and
// sum with shuffles.
template <int HDP>
__device__ void fa_forward(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask,
                           int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    constexpr int BR = FA_BR, BC = FA_BC_FWD, LD = HDP + 1, PLD = BC + 1;
    constexpr int TX = 16, TY = FA_THREADS / TX, RM = BR / TY, CM = BC / TX, DM = HDP / TX;
    float* sQ = fa_smem;
    float* sK = sQ + BR * LD;
    float* sV = sK + BC * LD;
    float* sP = sV + BC * LD; // [BR][PLD]
    int tiles = (Nq + BR - 1) / BR;
    int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles;
    int b = bh / heads, h = bh % heads;
    int q0 = tile * BR;
    int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    fa_load_tile<HDP>(sQ, BR, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow, bf16);
    float m[RM], l[RM], acc[RM][DM];
#pragma unroll
    for (int i = 0; i < RM; i++) {
        m[i] = -FMT_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int d = 0; d < DM; d++) acc[i][d] = 0.0f;
    }
    for (int k0 = 0; k0 < Nk; k0 += BC) {
        __syncthreads(); // the last tile's sK, sV, sP reads are done (sQ is written, the first time)
        fa_load_tile<HDP>(sK, BC, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow, bf16);
        fa_load_tile<HDP>(sV, BC, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow, bf16);
        __syncthreads();
        float s[RM][CM];
        fa_score_mm<HDP, RM, CM, TX, TY>(s, sQ, sK, tx, ty);
        bool keep[CM];
#pragma unroll
        for (int j = 0; j < CM; j++) keep[j] = fa_keep(mk, k0 + tx + TX * j, Nk);
        // Row maxima, then sums, over each row's 16 threads (a half-warp):
        // the shuffles of all RM rows of a step are independent.
        float mx[RM], sum[RM];
#pragma unroll
        for (int i = 0; i < RM; i++) {
            mx[i] = -FMT_INF;
#pragma unroll
            for (int j = 0; j < CM; j++) {
                s[i][j] = keep[j] ? s[i][j] * scale : -FMT_INF;
                mx[i] = fmaxf(mx[i], s[i][j]);
            }
        }
#pragma unroll
        for (int o = TX / 2; o > 0; o >>= 1)
#pragma unroll
            for (int i = 0; i < RM; i++) mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], o));
#pragma unroll
        for (int i = 0; i < RM; i++) {
            float mnew = fmaxf(m[i], mx[i]);
            // A row with no key kept so far has l = acc = 0: alpha 0, p 0,
            // and no exp(-inf - -inf).
            float alpha = m[i] == -FMT_INF ? 0.0f : expf(m[i] - mnew);
            sum[i] = 0.0f;
#pragma unroll
            for (int j = 0; j < CM; j++) {
                float p = s[i][j] == -FMT_INF ? 0.0f : expf(s[i][j] - mnew);
                sum[i] += p;
                sP[(ty + TY * i) * PLD + tx + TX * j] = fa_round(p, bf16);
            }
            m[i] = mnew;
            l[i] *= alpha;
#pragma unroll
            for (int d = 0; d < DM; d++) acc[i][d] *= alpha;
        }
#pragma unroll
        for (int o = TX / 2; o > 0; o >>= 1)
#pragma unroll
            for (int i = 0; i < RM; i++) sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], o);
#pragma unroll
        for (int i = 0; i < RM; i++) l[i] += sum[i];
        __syncthreads();
        fa_value_mm<HDP, BC, RM, TX, TY>(acc, sP, sV, tx, ty);
    }
    long long rowBase = (long long)bh * Nq;
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int row = q0 + ty + TY * i;
        if (row >= Nq) continue;
        // Every key masked (or none): zero output, lse = +inf.
        bool none = m[i] == -FMT_INF;
        float inv = none ? 0.0f : 1.0f / l[i];
        long long o = ((long long)b * Nq + row) * orow + h * hd;
#pragma unroll
        for (int d = 0; d < DM; d++)
            if (tx + TX * d < hd) fmt_st(O, o + tx + TX * d, acc[i][d] * inv, FMT_BF(st, 0));
        if (tx == 0) lse[rowBase + row] = none ? FMT_INF : m[i] + logf(l[i]);
    }
}

// fa_bwd_tile: P and dS of the thread's 4 rows (ty + 16i) and 4 keys
// (tx + 8j) of a [FA_BR x FA_BC_BWD] tile, thread (tx, ty) = (tid % 8,
// tid / 8): P = exp(scale*q.k - lse), 0 for dropped keys and for rows with
// lse = +inf (fully masked, or past Nq); dS = P*(dO.v - D)*scale.
template <int HDP>
__device__ __forceinline__ void fa_bwd_tile(float p[4][4], float ds[4][4], const float* sQ, const float* sdO, const float* sK, const float* sV,
                                            const float* sL, const float* sD, const bool keep[4], float scale, int tx, int ty) {
    fa_score_mm<HDP, 4, 4, 8, 16>(p, sQ, sK, tx, ty);
    fa_score_mm<HDP, 4, 4, 8, 16>(ds, sdO, sV, tx, ty); // dP for now
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float l = sL[ty + 16 * i], D = sD[ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            p[i][j] = (l == FMT_INF || !keep[j]) ? 0.0f : expf(p[i][j] * scale - l);
            ds[i][j] = p[i][j] * (ds[i][j] - D) * scale;
        }
    }
}

// fa_backward_dkdv: one block per FA_BC_BWD keys of one (b, h); loops over
// every query tile. For the tile products thread (tx, ty) = (tid % 8,
// tid / 8) as in fa_bwd_tile; for dK and dV it owns keys tx + 8a (a < 4)
// and head dims ty + 16c (c < HDP/16).
template <int HDP>
__device__ void fa_backward_dkdv(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask,
                                 const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow,
                                 float scale, int bf16, int st) {
    constexpr int BR = FA_BR, BC = FA_BC_BWD, LD = HDP + 1, PLD = BC + 1, DM = HDP / 16;
    float* sK = fa_smem;
    float* sV = sK + BC * LD;
    float* sQ = sV + BC * LD;
    float* sdO = sQ + BR * LD;
    float* sP = sdO + BR * LD; // [BR][PLD]
    float* sdS = sP + BR * PLD;
    float* sL = sdS + BR * PLD;
    float* sD = sL + BR;
    int tiles = (Nk + BC - 1) / BC;
    int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles;
    int b = bh / heads, h = bh % heads;
    int k0 = tile * BC;
    int tx = threadIdx.x % 8, ty = threadIdx.x / 8;
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    fa_load_tile<HDP>(sK, BC, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow, bf16);
    fa_load_tile<HDP>(sV, BC, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow, bf16);
    bool keep[4];
#pragma unroll
    for (int j = 0; j < 4; j++) keep[j] = fa_keep(mk, k0 + tx + 8 * j, Nk);
    float dk[4][DM], dv[4][DM];
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int c = 0; c < DM; c++) dk[a][c] = dv[a][c] = 0.0f;
    long long rowBase = (long long)bh * Nq;
    for (int q0 = 0; q0 < Nq; q0 += BR) {
        __syncthreads(); // the last tile's sQ, sdO, sP, sdS reads are done
        fa_load_tile<HDP>(sQ, BR, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow, bf16);
        fa_load_tile<HDP>(sdO, BR, dO, 0, (long long)b * Nq * orow + h * hd, q0, Nq, hd, orow, bf16);
        fa_load_row_stats(sL, sD, lse, D, rowBase, q0, Nq);
        __syncthreads();
        float p[4][4], ds[4][4];
        fa_bwd_tile<HDP>(p, ds, sQ, sdO, sK, sV, sL, sD, keep, scale, tx, ty);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                sP[(ty + 16 * i) * PLD + tx + 8 * j] = fa_round(p[i][j], bf16);
                sdS[(ty + 16 * i) * PLD + tx + 8 * j] = fa_round(ds[i][j], bf16);
            }
        __syncthreads();
        // dV += P^T dO, dK += dS^T Q over the tile's rows.
#pragma unroll 4
        for (int r = 0; r < BR; r++) {
            float pr[4], dsr[4], o[DM], q[DM];
#pragma unroll
            for (int a = 0; a < 4; a++) {
                pr[a] = sP[r * PLD + tx + 8 * a];
                dsr[a] = sdS[r * PLD + tx + 8 * a];
            }
#pragma unroll
            for (int c = 0; c < DM; c++) {
                o[c] = sdO[r * LD + ty + 16 * c];
                q[c] = sQ[r * LD + ty + 16 * c];
            }
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int c = 0; c < DM; c++) {
                    dv[a][c] = fmaf(pr[a], o[c], dv[a][c]);
                    dk[a][c] = fmaf(dsr[a], q[c], dk[a][c]);
                }
        }
    }
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int key = k0 + tx + 8 * a;
        if (key >= Nk) continue;
#pragma unroll
        for (int c = 0; c < DM; c++) {
            int col = ty + 16 * c;
            if (col >= hd) continue;
            if (dK) dK[((long long)b * Nk + key) * krow + h * hd + col] += dk[a][c];
            if (dV) dV[((long long)b * Nk + key) * vrow + h * hd + col] += dv[a][c];
        }
    }
}

// fa_backward_dq: one block per FA_BR query rows of one (b, h); loops over
// every key tile. Tile products as in fa_bwd_tile; for dQ thread (tx, ty)
// = (tid % 16, tid / 16) owns rows ty + 8i (i < 8) and head dims tx + 16d.
template <int HDP>
__device__ void fa_backward_dq(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask,
                               const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow,
                               float scale, int bf16, int st) {
    constexpr int BR = FA_BR, BC = FA_BC_BWD, LD = HDP + 1, PLD = BC + 1, DM = HDP / 16;
    float* sQ = fa_smem;
    float* sdO = sQ + BR * LD;
    float* sK = sdO + BR * LD;
    float* sV = sK + BC * LD;
    float* sdS = sV + BC * LD; // [BR][PLD]
    float* sL = sdS + BR * PLD;
    float* sD = sL + BR;
    int tiles = (Nq + BR - 1) / BR;
    int tile = blockIdx.x % tiles, bh = blockIdx.x / tiles;
    int b = bh / heads, h = bh % heads;
    int q0 = tile * BR;
    int tx = threadIdx.x % 8, ty = threadIdx.x / 8;   // tile products
    int ax = threadIdx.x % 16, ay = threadIdx.x / 16; // dQ accumulator
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    long long rowBase = (long long)bh * Nq;
    fa_load_tile<HDP>(sQ, BR, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow, bf16);
    fa_load_tile<HDP>(sdO, BR, dO, 0, (long long)b * Nq * orow + h * hd, q0, Nq, hd, orow, bf16);
    fa_load_row_stats(sL, sD, lse, D, rowBase, q0, Nq);
    float dq[8][DM];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int d = 0; d < DM; d++) dq[i][d] = 0.0f;
    for (int k0 = 0; k0 < Nk; k0 += BC) {
        __syncthreads(); // the last tile's sK, sdS reads are done (sQ, sdO, sL, sD are written, the first time)
        fa_load_tile<HDP>(sK, BC, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow, bf16);
        fa_load_tile<HDP>(sV, BC, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow, bf16);
        __syncthreads();
        bool keep[4];
#pragma unroll
        for (int j = 0; j < 4; j++) keep[j] = fa_keep(mk, k0 + tx + 8 * j, Nk);
        float p[4][4], ds[4][4];
        fa_bwd_tile<HDP>(p, ds, sQ, sdO, sK, sV, sL, sD, keep, scale, tx, ty);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) sdS[(ty + 16 * i) * PLD + tx + 8 * j] = fa_round(ds[i][j], bf16);
        __syncthreads();
        fa_value_mm<HDP, BC, 8, 16, 8>(dq, sdS, sK, ax, ay);
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int row = q0 + ay + 8 * i;
        if (row >= Nq) continue;
        float* g = dQ + ((long long)b * Nq + row) * qrow + h * hd;
#pragma unroll
        for (int d = 0; d < DM; d++)
            if (ax + 16 * d < hd) g[ax + 16 * d] += dq[i][d];
    }
}

// The instantiations the host launches (flash_attn_<kind>_<HDP>), grid
// (tiles * B * heads), block FA_THREADS, dynamic shared memory flashShared.
extern "C" __global__ void flash_attn_forward_32(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_forward<32>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_forward_64(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_forward<64>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_forward_80(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_forward<80>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_forward_96(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_forward<96>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_forward_128(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_forward<128>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}

extern "C" __global__ void flash_attn_backward_dkdv_32(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dkdv<32>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_64(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dkdv<64>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_80(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dkdv<80>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_96(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dkdv<96>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_128(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dkdv<128>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}

extern "C" __global__ void flash_attn_backward_dq_32(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dq<32>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dq_64(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dq<64>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dq_80(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dq<80>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dq_96(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dq<96>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
extern "C" __global__ void flash_attn_backward_dq_128(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int bf16, int st) {
    fa_backward_dq<128>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, bf16, st);
}
