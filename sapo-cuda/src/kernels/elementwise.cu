// Elementwise sums and SwiGLU, launched by src/ops/elementwise.rs
// (sapo-core's cpu/elementwise.rs).

extern "C" __global__ void add(float* out, const float* a, const float* b, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) out[i] = a[i] + b[i];
}

extern "C" __global__ void add_assign(float* acc, const float* x, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) acc[i] += x[i];
}

extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                                           const float* up, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const float g = gate[i];
        const float sigmoid = 1.0f / (1.0f + expf(-g));
        const float silu = g * sigmoid;
        dgate[i] += dout[i] * up[i] * sigmoid * (1.0f + g * (1.0f - sigmoid));
        dup[i] += dout[i] * silu;
    }
}
