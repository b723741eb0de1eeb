// A linear layer's bias, and the column sums of its gradient (which the
// RMSNorm weight gradient shares), launched by src/ops/matmul.rs (sapo-core's
// cpu/matmul.rs); the products themselves run in cuBLAS.

extern "C" __global__ void add_bias(float* out, const float* bias, u32 rows, u32 cols) {
    const size_t n = (size_t)rows * cols;
    for (size_t i = global_index(); i < n; i += global_stride()) out[i] += bias[i % cols];
}

// dst[c] += Σ_r src[r, c] (·other[r, c]·row_scale[r] when `other` is given):
// blocks of 32 columns × 16 row lanes, reduced in shared memory.
extern "C" __global__ void column_sum(float* dst, const float* src, const float* other, const float* row_scale,
                                      u32 rows, u32 cols) {
    __shared__ float partial[16][33];
    const u32 c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (c < cols) {
        for (u32 r = threadIdx.y; r < rows; r += 16) {
            const size_t i = (size_t)r * cols + c;
            acc += other ? src[i] * other[i] * row_scale[r] : src[i];
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.0f;
        for (u32 y = 0; y < 16; y++) total += partial[y][threadIdx.x];
        dst[c] += total;
    }
}
