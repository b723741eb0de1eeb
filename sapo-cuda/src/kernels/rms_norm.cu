// RMSNorm, launched by src/ops/rms_norm.rs (sapo-core's cpu/rms_norm.rs).

// One block per row.
extern "C" __global__ void rms_norm_forward(float* out, float* rstd, const float* inp, const float* weight,
                                            u32 rows, u32 cols, float eps) {
    __shared__ float shared[32];
    const u32 r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + (size_t)r * cols;
    float sum = 0.0f;
    for (u32 c = threadIdx.x; c < cols; c += blockDim.x) sum += x[c] * x[c];
    sum = block_sum(sum, shared);
    const float s = 1.0f / sqrtf(sum / (float)cols + eps);
    if (threadIdx.x == 0) rstd[r] = s;
    float* y = out + (size_t)r * cols;
    for (u32 c = threadIdx.x; c < cols; c += blockDim.x) y[c] = weight[c] * (x[c] * s);
}

// dinp += s·(w⊙dout) − x·s³·mean(w⊙dout⊙x); the weight gradient is a
// column sum (column_sum with other = inp, row_scale = rstd).
extern "C" __global__ void rms_norm_backward_input(float* dinp, const float* dout, const float* inp,
                                                   const float* weight, const float* rstd, u32 rows, u32 cols) {
    __shared__ float shared[32];
    const u32 r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + (size_t)r * cols;
    const float* dy = dout + (size_t)r * cols;
    float dot = 0.0f;
    for (u32 c = threadIdx.x; c < cols; c += blockDim.x) dot += weight[c] * dy[c] * x[c];
    dot = block_sum(dot, shared);
    const float s = rstd[r];
    const float coefficient = s * s * s * dot / (float)cols;
    float* dx = dinp + (size_t)r * cols;
    for (u32 c = threadIdx.x; c < cols; c += blockDim.x) dx[c] += s * weight[c] * dy[c] - x[c] * coefficient;
}
