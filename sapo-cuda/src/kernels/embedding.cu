// The embedding lookup and its backward, launched by src/ops/embedding.rs
// (sapo-core's cpu/embedding.rs). The backward adds each table row's
// gradients in token order instead of with float atomics, which add in
// whatever order threads arrive, so two runs of a step could differ in the
// last bits.

// An id outside the table writes NaN, so a bad batch cannot pass silently
// (batches are checked against the vocabulary when they are built).
extern "C" __global__ void embedding_forward(float* out, const u32* ids, const float* table, u32 n_tokens,
                                             u32 channels, u32 vocab) {
    const size_t n = (size_t)n_tokens * channels;
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 id = ids[i / channels];
        out[i] = id < vocab ? table[(size_t)id * channels + i % channels] : SAPO_NAN;
    }
}

// dtable[unique_ids[u], :] += Σ_k dout[token_list[k], :] for k in
// offsets[u]..offsets[u+1] (tokens grouped by id on the host, in token
// order): one block per distinct id.
extern "C" __global__ void embedding_backward_grouped(float* dtable, const float* dout, const u32* unique_ids,
                                                      const u32* offsets, const u32* token_list, u32 n_unique,
                                                      u32 channels) {
    const u32 u = blockIdx.x;
    if (u >= n_unique) return;
    const size_t row = (size_t)unique_ids[u] * channels;
    for (u32 c = threadIdx.x; c < channels; c += blockDim.x) {
        float acc = 0.0f;
        for (u32 k = offsets[u]; k < offsets[u + 1]; k++) acc += dout[(size_t)token_list[k] * channels + c];
        dtable[row + c] += acc;
    }
}
