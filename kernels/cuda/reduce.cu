// reduce.cu: row and column reductions. Column sums are two deterministic
// passes (no atomics, so a step is bit-reproducible): colsum_partial sums a
// chunk of rows per block into partial[Z, chunks, C], colsum_finalize adds
// the chunks into the destination.

// colsum_partial: for each matrix z (a + z*R*C, [R,C]) and column c,
// partial[(z*chunks + y)*C + c] = sum over rows r of chunk y of a[r,c]*b[r,c]
// (b may be null: a alone). Block (32, 8), grid (ceil(C/32), chunks, Z).
// st: 1 a, 2 b.
extern "C" __global__ void colsum_partial(float* partial, const void* a, const void* b, int R, int C, int rowsPerChunk, int st) {
    __shared__ float sh[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int y = blockIdx.y, z = blockIdx.z, chunks = gridDim.y;
    int r0 = y * rowsPerChunk;
    int r1 = min(R, r0 + rowsPerChunk);
    float s = 0.0f;
    if (c < C) {
        long long base = (long long)z * R * C;
        for (int r = r0 + (int)threadIdx.y; r < r1; r += blockDim.y) {
            float v = fmt_ld(a, base + (long long)r * C + c, FMT_BF(st, 1));
            if (b) v *= fmt_ld(b, base + (long long)r * C + c, FMT_BF(st, 2));
            s += v;
        }
    }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int i = 0; i < (int)blockDim.y; i++) t += sh[i][threadIdx.x];
        partial[((long long)z * chunks + y) * C + c] = t;
    }
}

// colsum_finalize: dst[z*dstStride + c] += sum_k partial[(z*chunks + k)*C + c].
extern "C" __global__ void colsum_finalize(float* dst, const float* partial, int chunks, int C, int Z, int dstStride) {
    long long total = (long long)Z * C;
    FMT_FOR(i, total) {
        int z = (int)(i / C), c = (int)(i % C);
        float s = 0.0f;
        for (int k = 0; k < chunks; k++) s += partial[((long long)z * chunks + k) * C + c];
        dst[(long long)z * dstStride + c] += s;
    }
}

// layernorm_forward: one warp per row (block 128 = 4 rows), no affine,
// eps 1e-6, biased variance, two passes over the row for accuracy.
// st: 0 out (in, the residual stream, is float32).
extern "C" __global__ void layernorm_forward(void* out, float* mean, float* rstd, const float* in, int rows, int cols, int st) {
    int row = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together
    const float* x = in + (long long)row * cols;
    float s = 0.0f;
    for (int j = lane; j < cols; j += 32) s += x[j];
    float m = fmt_warp_sum(s) / cols;
    float v = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        float d = x[j] - m;
        v += d * d;
    }
    float r = 1.0f / sqrtf(fmt_warp_sum(v) / cols + 1e-6f);
    long long o = (long long)row * cols;
    for (int j = lane; j < cols; j += 32) fmt_st(out, o + j, (x[j] - m) * r, FMT_BF(st, 0));
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// layernorm_backward: din += rstd*(dy - mean(dy) - xhat*mean(dy*xhat)),
// from forward's output xhat; one warp per row. st: 2 xhat.
extern "C" __global__ void layernorm_backward(float* din, const float* dout, const void* xhat, const float* rstd, int rows, int cols, int st) {
    int row = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* dy = dout + (long long)row * cols;
    long long xh = (long long)row * cols;
    int xbf = FMT_BF(st, 2);
    float a = 0.0f, b = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        a += dy[j];
        b += dy[j] * fmt_ld(xhat, xh + j, xbf);
    }
    a = fmt_warp_sum(a) / cols;
    b = fmt_warp_sum(b) / cols;
    float r = rstd[row];
    float* dx = din + (long long)row * cols;
    for (int j = lane; j < cols; j += 32) dx[j] += r * (dy[j] - a - fmt_ld(xhat, xh + j, xbf) * b);
}

// mse_partial: partial[block] = sum over the block's grid-stride share of
// (pred-target)^2 (pred^2 when target is null), in double; the host adds
// the partials in order. Block 256.
extern "C" __global__ void mse_partial(double* partial, const float* pred, const float* target, long long n) {
    __shared__ double sh[256];
    double s = 0.0;
    FMT_FOR(i, n) {
        double e = (double)pred[i] - (target ? (double)target[i] : 0.0);
        s += e * e;
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}
