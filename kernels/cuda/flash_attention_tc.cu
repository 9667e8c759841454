// flash_attention_tc.cu: the fused attention forward on tensor cores, for
// the mixed-precision backend. Same contract, layout, storage bits (st: 0 O,
// 1 Q, 2 K, 3 V), head-dim instantiations and results as fa_forward in
// flash_attention.cu with bf16 != 0: Q, K, V rounded to bf16, the
// un-normalised probabilities rounded to bf16 before the PV product, fp32
// accumulation, a fully masked row's output zero and its lse +inf.
//
// Products: mma.sync.aligned.m16n8k16 (bf16 operands, fp32 accumulators),
// sm_80 and later. Each of the block's 4 warps owns 16 query rows of the
// 64-row tile. Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16
// with floating point type"), with g = lane/4 and t = lane%4:
//   A (16x16, row-major): a0 = (row g,   cols 2t, 2t+1), a1 = (row g+8, same),
//                         a2 = (row g,   cols 2t+8, 2t+9), a3 = (row g+8, same);
//   B (16x8, "col"):      b0 = (rows 2t, 2t+1, col g), b1 = (rows 2t+8, 2t+9, col g);
//   C/D (16x8, fp32):     c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, same),
// each register holding two bf16 values, the lower index in the low half.
// S = Q K^T takes Q's rows as A and K's rows (a [key][dim] tile is B in
// "col" layout) as B; the S accumulators of two adjacent 8-key tiles are,
// element for element, the A fragment of P for the next product, so P
// never leaves registers; O += P V reads B from the [key][dim] V tile.
//
// Shared memory: Q, K and V tiles as bf16 [rows][HDP+8] (rows padded by 16
// bytes, so a fragment load's 32 lanes hit distinct banks): 3*64*(HDP+8)*2
// bytes, 52 KB at HDP 128 (launch.go's flashShared).

#define FT_LD(HDP) ((HDP) + 8)

// ft_mma: d += a*b for one m16n8k16 tile (bf16 in, fp32 accumulate).
// bf16 mma needs sm_80: on older devices the module still compiles, and
// the host never launches these kernels there (Backend.tensorCores).
__device__ __forceinline__ void ft_mma(float d[4], const unsigned int a[4], const unsigned int b[2]) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

// ft_pack: lo and hi rounded to bf16 in one register, lo in the low half.
__device__ __forceinline__ unsigned int ft_pack(float lo, float hi) {
    return (unsigned int)fmt_bf16(lo) | ((unsigned int)fmt_bf16(hi) << 16);
}

// ft_pair: the two bf16 values at tile[i] and tile[i+1] (i even) as one register.
__device__ __forceinline__ unsigned int ft_pair(const unsigned short* tile, int i) {
    return *(const unsigned int*)(tile + i);
}

// ft_load_tile: rows [row0, row0+rows) of one head into the bf16 tile
// [rows][HDP+8], rounded to bf16, zero past n rows and hd columns. All
// threads of the block.
template <int HDP>
__device__ __forceinline__ void ft_load_tile(unsigned short* tile, int rows, const void* src, int sbf, long long base, int row0, int n, int hd, int rowStride) {
    for (int idx = threadIdx.x; idx < rows * HDP; idx += FA_THREADS) {
        int r = idx / HDP, c = idx % HDP;
        float v = 0.0f;
        if (row0 + r < n && c < hd) v = fmt_ld(src, base + (long long)(row0 + r) * rowStride + c, sbf);
        tile[r * FT_LD(HDP) + c] = fmt_bf16(v);
    }
}

// ft_place: where a block and lane work. The block owns the tile of FA_BR
// rows (query rows; keys for dK/dV) starting at row0 of n, of one (b, h)
// with bh = b*heads + h; the lane (g, t) holds fragment rows g and g+8 of
// its warp's 16 rows from r0 of the tile.
struct FtPlace {
    int b, h, bh, row0, g, t, r0;
};

__device__ __forceinline__ FtPlace ft_place(int n, int heads) {
    int tiles = (n + FA_BR - 1) / FA_BR, block = blockIdx.x, tid = threadIdx.x;
    int bh = block / tiles, lane = tid % 32;
    return FtPlace{bh / heads, bh % heads, bh, (block % tiles) * FA_BR, lane / 4, lane % 4, (tid / 32) * 16};
}

// ft_forward: one block per FA_BR query rows of one (b, h); warp w owns
// rows 16w..16w+15 of the tile, lane (g, t) the rows g and g+8 of those in
// its S and O fragments. A row's 4 lanes (a quad) reduce its max and sum
// with shuffles.
template <int HDP>
__device__ void ft_forward(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask,
                           int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    constexpr int BR = FA_BR, BC = FA_BC_FWD, LD = FT_LD(HDP), KS = HDP / 16, NT = BC / 8, DT = HDP / 8;
    unsigned short* sQ = (unsigned short*)fa_smem;
    unsigned short* sK = sQ + BR * LD;
    unsigned short* sV = sK + BC * LD;
    auto [b, h, bh, q0, g, t, r0] = ft_place(Nq, heads);
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    ft_load_tile<HDP>(sQ, BR, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow);
    __syncthreads();
    // The warp's Q rows as A fragments, one per 16 head dims.
    unsigned int qa[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        int i = (r0 + g) * LD + kk * 16 + 2 * t;
        qa[kk][0] = ft_pair(sQ, i);
        qa[kk][1] = ft_pair(sQ, i + 8 * LD);
        qa[kk][2] = ft_pair(sQ, i + 8);
        qa[kk][3] = ft_pair(sQ, i + 8 * LD + 8);
    }
    // Rows g (index 0) and g+8 (index 1) of the warp's 16.
    float m[2] = {-FMT_INF, -FMT_INF}, l[2] = {0.0f, 0.0f};
    float acc[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[d][i] = 0.0f;
    for (int k0 = 0; k0 < Nk; k0 += BC) {
        __syncthreads(); // the last tile's sK, sV reads are done
        ft_load_tile<HDP>(sK, BC, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow);
        ft_load_tile<HDP>(sV, BC, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow);
        __syncthreads();
        // S = Q K^T: s[j] holds keys 8j + 2t, 8j + 2t + 1 of rows g, g+8.
        float s[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int i = 0; i < 4; i++) s[j][i] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                int i = (8 * j + g) * LD + kk * 16 + 2 * t;
                unsigned int kb[2] = {ft_pair(sK, i), ft_pair(sK, i + 8)};
                ft_mma(s[j], qa[kk], kb);
            }
        }
        float mx[2] = {-FMT_INF, -FMT_INF};
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                bool keep = fa_keep(mk, k0 + 8 * j + 2 * t + (i & 1), Nk);
                s[j][i] = keep ? s[j][i] * scale : -FMT_INF;
                mx[i / 2] = fmaxf(mx[i / 2], s[j][i]);
            }
#pragma unroll
        for (int o = 1; o < 4; o <<= 1)
#pragma unroll
            for (int r = 0; r < 2; r++) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], o));
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mnew = fmaxf(m[r], mx[r]);
            // A row with no key kept so far has l = acc = 0: alpha 0, p 0,
            // and no exp(-inf - -inf).
            alpha[r] = m[r] == -FMT_INF ? 0.0f : expf(m[r] - mnew);
            m[r] = mnew;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int d = 0; d < DT; d++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[d][i] *= alpha[i / 2];
        // P = exp(S - m), summed unrounded, rounded to bf16 as the A
        // fragments of 16-key steps: tiles 2kk and 2kk+1.
        float sum[2] = {0.0f, 0.0f};
        unsigned int pa[NT / 2][4];
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            float p[2][4];
#pragma unroll
            for (int jj = 0; jj < 2; jj++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float v = s[2 * kk + jj][i];
                    p[jj][i] = v == -FMT_INF ? 0.0f : expf(v - m[i / 2]);
                    sum[i / 2] += p[jj][i];
                }
            pa[kk][0] = ft_pack(p[0][0], p[0][1]);
            pa[kk][1] = ft_pack(p[0][2], p[0][3]);
            pa[kk][2] = ft_pack(p[1][0], p[1][1]);
            pa[kk][3] = ft_pack(p[1][2], p[1][3]);
        }
#pragma unroll
        for (int o = 1; o < 4; o <<= 1)
#pragma unroll
            for (int r = 0; r < 2; r++) sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], o);
#pragma unroll
        for (int r = 0; r < 2; r++) l[r] += sum[r];
        // O += P V: B holds keys 16kk + 2t, +1 (+8, +9) of head dim 8d + g.
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int d = 0; d < DT; d++) {
                const unsigned short* v = sV + (16 * kk + 2 * t) * LD + 8 * d + g;
                unsigned int vb[2] = {(unsigned int)v[0] | ((unsigned int)v[LD] << 16),
                                      (unsigned int)v[8 * LD] | ((unsigned int)v[9 * LD] << 16)};
                ft_mma(acc[d], pa[kk], vb);
            }
    }
    long long rowBase = (long long)bh * Nq;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = q0 + r0 + g + 8 * r;
        if (row >= Nq) continue;
        // Every key masked (or none): zero output, lse = +inf.
        bool none = m[r] == -FMT_INF;
        float inv = none ? 0.0f : 1.0f / l[r];
        long long o = ((long long)b * Nq + row) * orow + h * hd;
#pragma unroll
        for (int d = 0; d < DT; d++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int col = 8 * d + 2 * t + c;
                if (col < hd) fmt_st(O, o + col, acc[d][2 * r + c] * inv, FMT_BF(st, 0));
            }
        if (t == 0) lse[rowBase + row] = none ? FMT_INF : m[r] + logf(l[r]);
    }
}

extern "C" __global__ void flash_attn_forward_tc_32(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_forward<32>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_forward_tc_64(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_forward<64>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_forward_tc_80(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_forward<80>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_forward_tc_96(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_forward<96>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_forward_tc_128(void* O, float* lse, const void* Q, const void* K, const void* V, const float* mask, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_forward<128>(O, lse, Q, K, V, mask, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}

// The backward on tensor cores: the same two deterministic kernels as
// flash_attention.cu's (one per key tile for dK and dV, one per query tile
// for dQ; no atomics), with the same recomputation and rounding points: Q,
// K, V and dO rounded to bf16 as loaded, P = exp(scale*q.k - lse) (0 for
// dropped keys and rows with lse = +inf), dS = P*(dP - D)*scale, P and dS
// rounded to bf16 before the dV, dK and dQ products. Key tiles hold
// FA_BC_BWD keys in the dQ kernel; the dK/dV kernel owns FA_BR keys (16
// per warp) and walks query tiles of FA_BC_BWD rows.

// ft_b_rows: the B fragment of a [k][n] tile stored row-major (rows are
// k): k = 16kk + 2t, +1 (+8, +9), n = n0 + g; two 16-bit loads a register.
template <int HDP>
__device__ __forceinline__ void ft_b_rows(unsigned int b[2], const unsigned short* tile, int kk, int n0, int g, int t) {
    const unsigned short* p = tile + (16 * kk + 2 * t) * FT_LD(HDP) + n0 + g;
    b[0] = (unsigned int)p[0] | ((unsigned int)p[FT_LD(HDP)] << 16);
    b[1] = (unsigned int)p[8 * FT_LD(HDP)] | ((unsigned int)p[9 * FT_LD(HDP)] << 16);
}

// ft_b_cols: the B fragment of rows [n0, n0+8) of a [n][k] tile (rows are
// n, "col" layout): n = n0 + g, k = 16kk + 2t, +1 (+8, +9).
template <int HDP>
__device__ __forceinline__ void ft_b_cols(unsigned int b[2], const unsigned short* tile, int kk, int n0, int g, int t) {
    int i = (n0 + g) * FT_LD(HDP) + kk * 16 + 2 * t;
    b[0] = ft_pair(tile, i);
    b[1] = ft_pair(tile, i + 8);
}

// ft_a_rows: the A fragment of rows [r0, r0+16) of a [rows][k] tile, k
// step kk.
template <int HDP>
__device__ __forceinline__ void ft_a_rows(unsigned int a[4], const unsigned short* tile, int kk, int r0, int g, int t) {
    int i = (r0 + g) * FT_LD(HDP) + kk * 16 + 2 * t;
    a[0] = ft_pair(tile, i);
    a[1] = ft_pair(tile, i + 8 * FT_LD(HDP));
    a[2] = ft_pair(tile, i + 8);
    a[3] = ft_pair(tile, i + 8 * FT_LD(HDP) + 8);
}

// ft_a_from_c: the A fragment of k step kk from accumulators c of 8-column
// tiles 2kk and 2kk+1, rounded to bf16.
__device__ __forceinline__ void ft_a_from_c(unsigned int a[4], const float c0[4], const float c1[4]) {
    a[0] = ft_pack(c0[0], c0[1]);
    a[1] = ft_pack(c0[2], c0[3]);
    a[2] = ft_pack(c1[0], c1[1]);
    a[3] = ft_pack(c1[2], c1[3]);
}

// ft_backward_dkdv: one block per FA_BR keys of one (b, h); warp w owns keys
// 16w..16w+15 of the tile (rows of S^T = K Q^T, P^T and dS^T) and their dK
// and dV accumulators; query tiles of FA_BC_BWD rows are the columns.
template <int HDP>
__device__ void ft_backward_dkdv(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask,
                                 const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow,
                                 float scale, int st) {
    constexpr int BK = FA_BR, BQ = FA_BC_BWD, LD = FT_LD(HDP), KS = HDP / 16, NT = BQ / 8, DT = HDP / 8;
    unsigned short* sK = (unsigned short*)fa_smem;
    unsigned short* sV = sK + BK * LD;
    unsigned short* sQ = sV + BK * LD;
    unsigned short* sdO = sQ + BQ * LD;
    float* sL = (float*)(sdO + BQ * LD);
    float* sD = sL + BQ;
    auto [b, h, bh, k0, g, t, r0] = ft_place(Nk, heads);
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    long long rowBase = (long long)bh * Nq;
    ft_load_tile<HDP>(sK, BK, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow);
    ft_load_tile<HDP>(sV, BK, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow);
    // The lane's keys g and g+8 of the warp's 16.
    bool keep[2] = {fa_keep(mk, k0 + r0 + g, Nk), fa_keep(mk, k0 + r0 + g + 8, Nk)};
    float dk[DT][4], dv[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) dk[d][i] = dv[d][i] = 0.0f;
    for (int q0 = 0; q0 < Nq; q0 += BQ) {
        __syncthreads(); // the last tile's sQ, sdO, sL, sD reads are done (sK, sV are written, the first time)
        ft_load_tile<HDP>(sQ, BQ, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow);
        ft_load_tile<HDP>(sdO, BQ, dO, 0, (long long)b * Nq * orow + h * hd, q0, Nq, hd, orow);
        for (int r = threadIdx.x; r < BQ; r += FA_THREADS) {
            bool in = q0 + r < Nq;
            sL[r] = in ? lse[rowBase + q0 + r] : FMT_INF;
            sD[r] = in ? D[rowBase + q0 + r] : 0.0f;
        }
        __syncthreads();
        // S^T = K Q^T and dP^T = V dO^T: s[j], dp[j] hold queries 8j + 2t, +1.
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[j][i] = dp[j][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            unsigned int ka[4], va[4];
            ft_a_rows<HDP>(ka, sK, kk, r0, g, t);
            ft_a_rows<HDP>(va, sV, kk, r0, g, t);
#pragma unroll
            for (int j = 0; j < NT; j++) {
                unsigned int qb[2], ob[2];
                ft_b_cols<HDP>(qb, sQ, kk, 8 * j, g, t);
                ft_b_cols<HDP>(ob, sdO, kk, 8 * j, g, t);
                ft_mma(s[j], ka, qb);
                ft_mma(dp[j], va, ob);
            }
        }
        // P^T into s, dS^T into dp.
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int q = 8 * j + 2 * t + (i & 1);
                float l = sL[q];
                float p = (l == FMT_INF || !keep[i / 2]) ? 0.0f : expf(s[j][i] * scale - l);
                s[j][i] = p;
                dp[j][i] = p * (dp[j][i] - sD[q]) * scale;
            }
        // dV += P^T dO and dK += dS^T Q over the tile's queries.
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            unsigned int pa[4], dsa[4];
            ft_a_from_c(pa, s[2 * kk], s[2 * kk + 1]);
            ft_a_from_c(dsa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int d = 0; d < DT; d++) {
                unsigned int b[2];
                if (dV) {
                    ft_b_rows<HDP>(b, sdO, kk, 8 * d, g, t);
                    ft_mma(dv[d], pa, b);
                }
                if (dK) {
                    ft_b_rows<HDP>(b, sQ, kk, 8 * d, g, t);
                    ft_mma(dk[d], dsa, b);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int key = k0 + r0 + g + 8 * r;
        if (key >= Nk) continue;
#pragma unroll
        for (int d = 0; d < DT; d++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int col = 8 * d + 2 * t + c;
                if (col >= hd) continue;
                if (dK) dK[((long long)b * Nk + key) * krow + h * hd + col] += dk[d][2 * r + c];
                if (dV) dV[((long long)b * Nk + key) * vrow + h * hd + col] += dv[d][2 * r + c];
            }
    }
}

// ft_backward_dq: one block per FA_BR query rows of one (b, h); warp w owns
// rows 16w..16w+15 (its Q and dO rows stay in registers as A fragments)
// and walks key tiles of FA_BC_BWD keys.
template <int HDP>
__device__ void ft_backward_dq(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask,
                               const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow,
                               float scale, int st) {
    constexpr int BR = FA_BR, BC = FA_BC_BWD, LD = FT_LD(HDP), KS = HDP / 16, NT = BC / 8, DT = HDP / 8;
    unsigned short* sQ = (unsigned short*)fa_smem;
    unsigned short* sdO = sQ + BR * LD;
    unsigned short* sK = sdO + BR * LD;
    unsigned short* sV = sK + BC * LD;
    auto [b, h, bh, q0, g, t, r0] = ft_place(Nq, heads);
    const float* mk = mask ? mask + (long long)b * Nk : 0;
    long long rowBase = (long long)bh * Nq;
    ft_load_tile<HDP>(sQ, BR, Q, FMT_BF(st, 1), (long long)b * Nq * qrow + h * hd, q0, Nq, hd, qrow);
    ft_load_tile<HDP>(sdO, BR, dO, 0, (long long)b * Nq * orow + h * hd, q0, Nq, hd, orow);
    __syncthreads();
    unsigned int qa[KS][4], da[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        ft_a_rows<HDP>(qa[kk], sQ, kk, r0, g, t);
        ft_a_rows<HDP>(da[kk], sdO, kk, r0, g, t);
    }
    // lse and D of the lane's rows g and g+8 (past Nq: lse +inf, so P 0).
    float L[2], Dr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = q0 + r0 + g + 8 * r;
        L[r] = row < Nq ? lse[rowBase + row] : FMT_INF;
        Dr[r] = row < Nq ? D[rowBase + row] : 0.0f;
    }
    float acc[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[d][i] = 0.0f;
    for (int k0 = 0; k0 < Nk; k0 += BC) {
        __syncthreads(); // the last tile's sK, sV reads are done
        ft_load_tile<HDP>(sK, BC, K, FMT_BF(st, 2), (long long)b * Nk * krow + h * hd, k0, Nk, hd, krow);
        ft_load_tile<HDP>(sV, BC, V, FMT_BF(st, 3), (long long)b * Nk * vrow + h * hd, k0, Nk, hd, vrow);
        __syncthreads();
        // S = Q K^T and dP = dO V^T: s[j], dp[j] hold keys 8j + 2t, +1.
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int i = 0; i < 4; i++) s[j][i] = dp[j][i] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                unsigned int kb[2], vb[2];
                ft_b_cols<HDP>(kb, sK, kk, 8 * j, g, t);
                ft_b_cols<HDP>(vb, sV, kk, 8 * j, g, t);
                ft_mma(s[j], qa[kk], kb);
                ft_mma(dp[j], da[kk], vb);
            }
        }
        // dS into dp.
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float l = L[i / 2];
                float p = (l == FMT_INF || !fa_keep(mk, k0 + 8 * j + 2 * t + (i & 1), Nk)) ? 0.0f : expf(s[j][i] * scale - l);
                dp[j][i] = p * (dp[j][i] - Dr[i / 2]) * scale;
            }
        // dQ += dS K over the tile's keys.
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            unsigned int dsa[4];
            ft_a_from_c(dsa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int d = 0; d < DT; d++) {
                unsigned int b[2];
                ft_b_rows<HDP>(b, sK, kk, 8 * d, g, t);
                ft_mma(acc[d], dsa, b);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = q0 + r0 + g + 8 * r;
        if (row >= Nq) continue;
        float* gq = dQ + ((long long)b * Nq + row) * qrow + h * hd;
#pragma unroll
        for (int d = 0; d < DT; d++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int col = 8 * d + 2 * t + c;
                if (col < hd) gq[col] += acc[d][2 * r + c];
            }
    }
}
extern "C" __global__ void flash_attn_backward_dkdv_tc_32(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dkdv<32>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_tc_64(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dkdv<64>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_tc_80(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dkdv<80>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_tc_96(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dkdv<96>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dkdv_tc_128(float* dK, float* dV, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dkdv<128>(dK, dV, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}

extern "C" __global__ void flash_attn_backward_dq_tc_32(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dq<32>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dq_tc_64(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dq<64>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dq_tc_80(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dq<80>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dq_tc_96(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dq<96>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
extern "C" __global__ void flash_attn_backward_dq_tc_128(float* dQ, const float* dO, const void* Q, const void* K, const void* V, const float* mask, const float* lse, const float* D, int heads, int Nq, int Nk, int hd, int qrow, int krow, int vrow, int orow, float scale, int st) {
    ft_backward_dq<128>(dQ, dO, Q, K, V, mask, lse, D, heads, Nq, Nk, hd, qrow, krow, vrow, orow, scale, st);
}
