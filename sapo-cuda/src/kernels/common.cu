// sapo-cuda kernels: the files of this folder, concatenated in a fixed order
// (`KERNEL_SOURCE` in ../kernels.rs, this file first) into one CUDA C++
// source compiled at run time by NVRTC. This file holds what the others
// share: integer types, constants, index, warp and block helpers.
//
// No header is included (NVRTC would need the toolkit's headers at run time),
// so the few helpers CUDA's headers would give are written here. Every
// kernel mirrors the CPU reference in sapo-core (`cpu/*.rs`) operation for
// operation where the reference fixes an order of f32 operations (RoPE's
// angles, the optimizers, the EMA); reductions differ only in summation order.
//
// Conventions (as the Backend trait's): outputs first, row-major buffers,
// backward kernels accumulate (+=). Elementwise kernels use grid-stride
// loops so any launch size covers any length.

typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu
// math.h is not included: +∞ and a quiet NaN by their bits.
#define SAPO_INF __int_as_float(0x7f800000)
#define SAPO_NAN __int_as_float(0x7fc00000)
// Channels of a head each lane of a warp holds: head_dim ≤ 32·8 = 256.
#define MAX_PER_LANE 8

__device__ __forceinline__ size_t global_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t global_stride() { return (size_t)gridDim.x * blockDim.x; }

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

__device__ __forceinline__ double warp_sum_f64(double x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

// Sum over a block of at most 1024 threads (a multiple of 32); every thread
// gets the total. `shared` holds 32 floats.
__device__ float block_sum(float x, float* shared) {
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    float total = lane < warps ? shared[lane] : 0.0f;
    return warp_sum(total);
}

__device__ float block_max(float x, float* shared) {
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    float total = lane < warps ? shared[lane] : -SAPO_INF;
    return warp_max(total);
}

__device__ double block_sum_f64(double x, double* shared) {
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_sum_f64(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    double total = lane < warps ? shared[lane] : 0.0;
    return warp_sum_f64(total);
}

// The index of the sequence holding token `t`: the last `s` with
// `seq_starts[s] <= t` (empty sequences share a start; the last one wins,
// whose end is then past `t`).
__device__ u32 sequence_of(const u32* seq_starts, u32 n_starts, u32 t) {
    u32 lo = 0, hi = n_starts - 1;
    while (lo < hi) {
        u32 mid = (lo + hi + 1) / 2;
        if (seq_starts[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}
