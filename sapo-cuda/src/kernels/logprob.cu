// The fused log-probs of scored rows, one block of rows at a time: gathering
// the rows' hidden states, the log-softmax of their logits (a cuBLAS product
// between these kernels) and its gradient in place, and adding the rows'
// hidden-state gradients back. Launched by src/ops/logprob.rs (sapo-core's
// cpu/logprob.rs). add_rows fixes the order of the adds when the rows are
// distinct; scatter_add_rows is the atomic fallback for repeated rows.

// dst[i, :] = src[rows[first + i], :] for i < count.
extern "C" __global__ void gather_rows(float* dst, const float* src, const u32* rows, u32 first, u32 count,
                                       u32 channels) {
    const size_t n = (size_t)count * channels;
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 r = i / channels;
        dst[i] = src[(size_t)rows[first + r] * channels + i % channels];
    }
}

// dst[rows[first + i], :] += src[i, :] (atomically: a token may be scored twice).
extern "C" __global__ void scatter_add_rows(float* dst, const float* src, const u32* rows, u32 first, u32 count,
                                            u32 channels) {
    const size_t n = (size_t)count * channels;
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 r = i / channels;
        atomicAdd(&dst[(size_t)rows[first + r] * channels + i % channels], src[i]);
    }
}

// dst[rows[first + i], :] += src[i, :] when the rows are distinct (one
// writer per element: no atomics needed).
extern "C" __global__ void add_rows(float* dst, const float* src, const u32* rows, u32 first, u32 count,
                                    u32 channels) {
    const size_t n = (size_t)count * channels;
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 r = i / channels;
        dst[(size_t)rows[first + r] * channels + i % channels] += src[i];
    }
}

// One block per row of a block of logits: lse = max + log Σ exp(l − max),
// logp = l[target] − lse.
extern "C" __global__ void logits_lse(float* logps, float* lse, const float* logits, const u32* targets, u32 first,
                                      u32 count, u32 vocab) {
    __shared__ float shared[32];
    const u32 i = blockIdx.x;
    if (i >= count) return;
    const float* row = logits + (size_t)i * vocab;
    float m = -SAPO_INF;
    for (u32 c = threadIdx.x; c < vocab; c += blockDim.x) m = fmaxf(m, row[c]);
    m = block_max(m, shared);
    float sum = 0.0f;
    for (u32 c = threadIdx.x; c < vocab; c += blockDim.x) sum += expf(row[c] - m);
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) {
        const float row_lse = m + logf(sum);
        const u32 target = targets[first + i];
        lse[first + i] = row_lse;
        logps[first + i] = target < vocab ? row[target] - row_lse : SAPO_NAN;
    }
}

// In place: logits[i, v] ← dlogps[r]·(1[v = target] − exp(logits[i, v] − lse[r])).
extern "C" __global__ void logits_grad(float* logits, const float* dlogps, const u32* targets, const float* lse,
                                       u32 first, u32 count, u32 vocab) {
    const size_t n = (size_t)count * vocab;
    for (size_t index = global_index(); index < n; index += global_stride()) {
        const u32 i = index / vocab, c = index % vocab;
        const u32 r = first + i;
        const float softmax = expf(logits[index] - lse[r]);
        logits[index] = dlogps[r] * ((c == targets[r] ? 1.0f : 0.0f) - softmax);
    }
}
