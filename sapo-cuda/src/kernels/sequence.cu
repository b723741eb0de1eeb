// Per-sequence sums and means of token log-probs, launched by
// src/ops/sequence.rs (sapo-core's cpu/sequence.rs).

// One block per sequence: sums and counts its rows in f64.
extern "C" __global__ void sequence_logprobs(float* sums, float* means, float* counts, const float* logps,
                                             const u32* row_seqs, u32 n_rows, u32 n_seqs) {
    __shared__ double shared[32];
    const u32 s = blockIdx.x;
    if (s >= n_seqs) return;
    double sum = 0.0, count = 0.0;
    for (u32 r = threadIdx.x; r < n_rows; r += blockDim.x) {
        if (row_seqs[r] == s) {
            sum += (double)logps[r];
            count += 1.0;
        }
    }
    sum = block_sum_f64(sum, shared);
    count = block_sum_f64(count, shared);
    if (threadIdx.x == 0) {
        if (sums) sums[s] = (float)sum;
        if (means) means[s] = count > 0.0 ? (float)(sum / count) : 0.0f;
        if (counts) counts[s] = (float)count;
    }
}

extern "C" __global__ void sequence_logprobs_backward(float* dlogps, const float* dsums, const float* dmeans,
                                                      const float* counts, const u32* row_seqs, u32 n_rows,
                                                      u32 n_seqs) {
    for (size_t r = global_index(); r < n_rows; r += global_stride()) {
        const u32 s = row_seqs[r];
        if (s < n_seqs) dlogps[r] += dsums[s] + dmeans[s] / counts[s];
    }
}
