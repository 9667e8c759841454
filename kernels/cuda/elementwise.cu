// elementwise.cu: one-pass kernels (launched with 256 threads and a
// grid-stride loop; see launch.go's elementwise config).

// cast_bf16: out = bf16(in), the GEMM operands of the mixed-precision path.
extern "C" __global__ void cast_bf16(unsigned short* out, const float* in, long long n) {
    FMT_FOR(i, n) out[i] = fmt_bf16(in[i]);
}

// accumulate: dst += src (residual backward, staged gradients).
extern "C" __global__ void accumulate(float* dst, const float* src, long long n) {
    FMT_FOR(i, n) dst[i] += src[i];
}

// residual_forward: out = a + b (out may alias a). st: 0 out, 1 a, 2 b.
extern "C" __global__ void residual_forward(void* out, const void* a, const void* b, long long n, int st) {
    FMT_FOR(i, n) fmt_st(out, i, fmt_ld(a, i, FMT_BF(st, 1)) + fmt_ld(b, i, FMT_BF(st, 2)), FMT_BF(st, 0));
}

// bias_store: out[r, c] = c[r, c] + bias[c] (bias may be null) for out
// [rows, cols]: a linear layer's GEMM result, computed in fp32 scratch,
// rounded once into its bf16 output. st: 0 out.
extern "C" __global__ void bias_store(void* out, const float* c, const float* bias, long long rows, int cols, int st) {
    FMT_FOR(i, rows * cols) fmt_st(out, i, c[i] + (bias ? bias[i % cols] : 0.0f), FMT_BF(st, 0));
}

// bias_add: out[r, c] += bias[c] for out [rows, cols].
extern "C" __global__ void bias_add(float* out, const float* bias, long long rows, int cols) {
    FMT_FOR(i, rows * cols) out[i] += bias[i % cols];
}

// GELU, tanh form: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))).
#define FMT_GELU_C 0.7978845608028654f

// The activations' forward kernels take st: 0 out, 1 in; their backward
// kernels st: 2 in (din and dout are gradients, always float32).
extern "C" __global__ void gelu_forward(void* out, const void* in, long long n, int st) {
    FMT_FOR(i, n) {
        float x = fmt_ld(in, i, FMT_BF(st, 1));
        fmt_st(out, i, 0.5f * x * (1.0f + tanhf(FMT_GELU_C * (x + 0.044715f * x * x * x))), FMT_BF(st, 0));
    }
}

extern "C" __global__ void gelu_backward(float* din, const float* dout, const void* in, long long n, int st) {
    FMT_FOR(i, n) {
        float x = fmt_ld(in, i, FMT_BF(st, 2));
        float t = tanhf(FMT_GELU_C * (x + 0.044715f * x * x * x));
        float du = FMT_GELU_C * (1.0f + 3.0f * 0.044715f * x * x);
        din[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
    }
}

// SiLU: x*sigmoid(x).
extern "C" __global__ void silu_forward(void* out, const void* in, long long n, int st) {
    FMT_FOR(i, n) {
        float x = fmt_ld(in, i, FMT_BF(st, 1));
        fmt_st(out, i, x / (1.0f + expf(-x)), FMT_BF(st, 0));
    }
}

extern "C" __global__ void silu_backward(float* din, const float* dout, const void* in, long long n, int st) {
    FMT_FOR(i, n) {
        float x = fmt_ld(in, i, FMT_BF(st, 2));
        float s = 1.0f / (1.0f + expf(-x));
        din[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}

// modulate_forward: out[b,n,j] = in[b,n,j]*(1+scale[b*ms+j]) + shift[b*ms+j], in [B,N,D].
// st: 0 out, 1 in.
extern "C" __global__ void modulate_forward(void* out, const void* in, const float* shift, const float* scale, int B, int N, int D, int ms, int st) {
    long long total = (long long)B * N * D;
    FMT_FOR(i, total) {
        int j = (int)(i % D);
        int b = (int)(i / ((long long)N * D));
        fmt_st(out, i, fmt_ld(in, i, FMT_BF(st, 1)) * (1.0f + scale[(long long)b * ms + j]) + shift[(long long)b * ms + j], FMT_BF(st, 0));
    }
}

// modulate_backward_input: din += dout*(1+scale[b]).
extern "C" __global__ void modulate_backward_input(float* din, const float* dout, const float* scale, int B, int N, int D, int ms) {
    long long total = (long long)B * N * D;
    FMT_FOR(i, total) {
        int j = (int)(i % D);
        int b = (int)(i / ((long long)N * D));
        din[i] += dout[i] * (1.0f + scale[(long long)b * ms + j]);
    }
}

// gated_residual_forward: h[b,n,j] += gate[b*gs+j]*y[b,n,j]. st: 1 y.
extern "C" __global__ void gated_residual_forward(float* h, const void* y, const float* gate, int B, int N, int D, int gs, int st) {
    long long total = (long long)B * N * D;
    FMT_FOR(i, total) {
        int j = (int)(i % D);
        int b = (int)(i / ((long long)N * D));
        h[i] += gate[(long long)b * gs + j] * fmt_ld(y, i, FMT_BF(st, 1));
    }
}

// gated_residual_backward_input: dy += dh*gate[b].
extern "C" __global__ void gated_residual_backward_input(float* dy, const float* dh, const float* gate, int B, int N, int D, int gs) {
    long long total = (long long)B * N * D;
    FMT_FOR(i, total) {
        int j = (int)(i % D);
        int b = (int)(i / ((long long)N * D));
        dy[i] += dh[i] * gate[(long long)b * gs + j];
    }
}

// mse_backward: dpred += f*(pred-target), f = 2*scale/n (computed on the host in float64).
extern "C" __global__ void mse_backward(float* dpred, const float* pred, const float* target, long long n, float f) {
    FMT_FOR(i, n) dpred[i] += f * (pred[i] - target[i]);
}

// adamw: torch.optim.AdamW's single-tensor update, in the order (and with
// the fused multiply-adds) of optim.AdamW.Update, so the GPU and CPU
// optimizers agree to the last bit in the common case. Arguments are the
// per-step scalars the host computes: decay = 1-lr*wd, a1 = 1-b1, a2 = 1-b2,
// bc2s = sqrt(1-b2^t), negStep = -lr/(1-b1^t).
extern "C" __global__ void adamw(float* p, float* m, float* v, const float* g, long long n,
                                 float decay, float b1, float a1, float b2, float a2, float bc2s, float negStep, float eps) {
    FMT_FOR(i, n) {
        float gi = g[i];
        float pi = __fmul_rn(p[i], decay);
        float mi = __fmaf_rn(a1, gi, __fmul_rn(m[i], b1));
        float vi = __fmaf_rn(__fmul_rn(a2, gi), gi, __fmul_rn(v[i], b2));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2s), eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(negStep, mi), denom));
        m[i] = mi;
        v[i] = vi;
    }
}

// ema_update: s = d*s + a*p with both products and the sum rounded (no
// fused multiply-add), optim.EMA.Update's arithmetic; d == 0 copies p.
extern "C" __global__ void ema_update(float* s, const float* p, long long n, float d, float a) {
    FMT_FOR(i, n) s[i] = d == 0.0f ? p[i] : __fadd_rn(__fmul_rn(d, s[i]), __fmul_rn(a, p[i]));
}

// scale_matrix: c[r*ldc + j] *= beta for j < cols (beta == 0 writes zeros,
// NaN-safe): a GEMM with k == 0.
extern "C" __global__ void scale_matrix(float* c, long long rows, int cols, int ldc, float beta) {
    FMT_FOR(i, rows * cols) {
        long long r = i / cols;
        int j = (int)(i % cols);
        float* p = c + r * ldc + j;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

// scale_vector: dst *= s (gradient clipping).
extern "C" __global__ void scale_vector(float* dst, float s, long long n) {
    FMT_FOR(i, n) dst[i] *= s;
}
