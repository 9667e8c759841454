// attention.cu: the softmax stages of multi-head attention. The products
// (S = scale*Q*K^T, O = P*V and their gradients) run as batched cuBLAS
// GEMMs over every (sample, head) of a chunk of samples (bf16 operands on
// the mixed-precision path); these kernels work on the chunk's score blocks
// S [samples, Heads, Nq, Nk] in place. Row r = (s*Heads + h)*Nq + i, and
// rowsPerSample = Heads*Nq rows share sample s's key mask.

// attn_softmax_forward: S <- softmax over keys of S (already scaled), with
// masked keys (mask[j] == 0; mask may be null) excluded; lse[r] = log-sum-exp
// of the row, +inf and a zero row when every key is masked. One warp per row,
// block 128.
extern "C" __global__ void attn_softmax_forward(float* S, float* lse, const float* mask, int rows, int Nk, int rowsPerSample) {
    int row = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float* s = S + (long long)row * Nk;
    if (mask) mask += (long long)(row / rowsPerSample) * Nk;
    float mx = -FMT_INF;
    for (int j = lane; j < Nk; j += 32)
        if (!mask || mask[j] != 0.0f) mx = fmaxf(mx, s[j]);
    mx = fmt_warp_max(mx);
    if (mx == -FMT_INF) {
        for (int j = lane; j < Nk; j += 32) s[j] = 0.0f;
        if (lane == 0) lse[row] = FMT_INF;
        return;
    }
    float sum = 0.0f;
    for (int j = lane; j < Nk; j += 32) {
        float e = (mask && mask[j] == 0.0f) ? 0.0f : expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    sum = fmt_warp_sum(sum);
    float inv = 1.0f / sum;
    for (int j = lane; j < Nk; j += 32) s[j] *= inv;
    if (lane == 0) lse[row] = mx + logf(sum);
}

// attn_softmax_recompute: P = exp(S - lse[row]) from recomputed scaled
// scores, 0 for masked keys and fully masked rows (lse = +inf).
extern "C" __global__ void attn_softmax_recompute(float* S, const float* lse, const float* mask, int rows, int Nk, int rowsPerSample) {
    long long total = (long long)rows * Nk;
    FMT_FOR(i, total) {
        int j = (int)(i % Nk);
        long long row = i / Nk;
        float l = lse[row];
        bool masked = mask && mask[(row / rowsPerSample) * Nk + j] == 0.0f;
        S[i] = (l == FMT_INF || masked) ? 0.0f : expf(S[i] - l);
    }
}

// attn_rowdot: D[r] = sum_c dO[s, i, h*hd + c] * O[s, i, h*hd + c] for
// r = (s*heads + h)*Nq + i (rows of O and dO have stride orow, samples
// Nq*orow). One thread per row. st: 2 O.
extern "C" __global__ void attn_rowdot(float* D, const float* dO, const void* O, int samples, int heads, int Nq, int hd, int orow, int st) {
    long long total = (long long)samples * heads * Nq;
    FMT_FOR(r, total) {
        int smp = (int)(r / ((long long)heads * Nq));
        int h = (int)((r / Nq) % heads), i = (int)(r % Nq);
        long long base = ((long long)smp * Nq + i) * orow + h * hd;
        const float* a = dO + base;
        float s = 0.0f;
        for (int c = 0; c < hd; c++) s += a[c] * fmt_ld(O, base + c, FMT_BF(st, 2));
        D[r] = s;
    }
}

// attn_softmax_backward: dS = P*(dP - D[row])*scale, in place in dP.
extern "C" __global__ void attn_softmax_backward(float* dP, const float* P, const float* D, int rows, int Nk, float scale) {
    long long total = (long long)rows * Nk;
    FMT_FOR(i, total) dP[i] = P[i] * (dP[i] - D[i / Nk]) * scale;
}
