// patch.cu: patchify / unpatchify (fm-dit.md steps 1 and 7) as gathers and
// scatters; each latent element maps to exactly one patch element, so the
// backward scatters need no atomics.

// fmt_patch_index: latent index of patch feature k of token n, sample b
// (feature k = ((c*pt + kt)*p + kh)*p + kw).
__device__ __forceinline__ long long fmt_patch_index(int b, int n, int k, int C, int F, int H, int W, int P, int PT) {
    int hp = H / P, wp = W / P;
    int fi = n / (hp * wp), hi = (n / wp) % hp, wi = n % wp;
    int kw = k % P, kh = (k / P) % P, kt = (k / (P * P)) % PT, c = k / (P * P * PT);
    return ((((long long)b * C + c) * F + fi * PT + kt) * H + hi * P + kh) * W + wi * P + kw;
}

// fmt_unpatch_index: latent index of output feature k (channel last:
// k = ((kt*p + kh)*p + kw)*C + c) of token n, sample b.
__device__ __forceinline__ long long fmt_unpatch_index(int b, int n, int k, int C, int F, int H, int W, int P, int PT) {
    int hp = H / P, wp = W / P;
    int fi = n / (hp * wp), hi = (n / wp) % hp, wi = n % wp;
    int c = k % C, kw = (k / C) % P, kh = (k / (C * P)) % P, kt = k / (C * P * P);
    return ((((long long)b * C + c) * F + fi * PT + kt) * H + hi * P + kh) * W + wi * P + kw;
}

// patchify_forward: out[b,n,k] = x[patch index]. N tokens, K = C*PT*P*P.
extern "C" __global__ void patchify_forward(float* out, const float* x, int B, int C, int F, int H, int W, int P, int PT) {
    int N = (F / PT) * (H / P) * (W / P), K = C * PT * P * P;
    long long total = (long long)B * N * K;
    FMT_FOR(i, total) {
        int k = (int)(i % K);
        int n = (int)((i / K) % N);
        int b = (int)(i / ((long long)N * K));
        out[i] = x[fmt_patch_index(b, n, k, C, F, H, W, P, PT)];
    }
}

extern "C" __global__ void patchify_backward(float* dx, const float* dout, int B, int C, int F, int H, int W, int P, int PT) {
    int N = (F / PT) * (H / P) * (W / P), K = C * PT * P * P;
    long long total = (long long)B * N * K;
    FMT_FOR(i, total) {
        int k = (int)(i % K);
        int n = (int)((i / K) % N);
        int b = (int)(i / ((long long)N * K));
        dx[fmt_patch_index(b, n, k, C, F, H, W, P, PT)] += dout[i];
    }
}

// unpatchify_forward: out[unpatch index] = o[b,n,k].
extern "C" __global__ void unpatchify_forward(float* out, const float* o, int B, int C, int F, int H, int W, int P, int PT) {
    int N = (F / PT) * (H / P) * (W / P), K = C * PT * P * P;
    long long total = (long long)B * N * K;
    FMT_FOR(i, total) {
        int k = (int)(i % K);
        int n = (int)((i / K) % N);
        int b = (int)(i / ((long long)N * K));
        out[fmt_unpatch_index(b, n, k, C, F, H, W, P, PT)] = o[i];
    }
}

extern "C" __global__ void unpatchify_backward(float* dO, const float* dout, int B, int C, int F, int H, int W, int P, int PT) {
    int N = (F / PT) * (H / P) * (W / P), K = C * PT * P * P;
    long long total = (long long)B * N * K;
    FMT_FOR(i, total) {
        int k = (int)(i % K);
        int n = (int)((i / K) % N);
        int b = (int)(i / ((long long)N * K));
        dO[i] += dout[fmt_unpatch_index(b, n, k, C, F, H, W, P, PT)];
    }
}
