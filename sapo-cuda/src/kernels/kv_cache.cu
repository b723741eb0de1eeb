// The key/value cache: writing new rows, and attention of new queries over
// the cached keys and values. Launched by src/ops/kv_cache.rs (sapo-core's
// cpu/kv_cache.rs).

// Rows whose slot or position lies outside the cache are not written (the
// host-side cache bookkeeping refuses such positions first).
extern "C" __global__ void kv_cache_write(float* cache, const float* fresh, const u32* slots, const u32* positions,
                                          u32 n_tokens, u32 n_slots, u32 max_len, u32 kv_dim) {
    const size_t n = (size_t)n_tokens * kv_dim;
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 t = i / kv_dim, j = i % kv_dim;
        const u32 slot = slots[t], position = positions[t];
        if (slot < n_slots && position < max_len)
            cache[((size_t)slot * max_len + position) * kv_dim + j] = fresh[i];
    }
}

extern "C" __global__ void attention_cached(float* out, const float* q, const float* k_cache, const float* v_cache,
                                            const u32* slots, const u32* positions, u32 n_tokens, u32 n_slots,
                                            u32 max_len, u32 n_heads, u32 n_kv_heads, u32 head_dim, float scale) {
    const size_t warp = global_index() / 32;
    const u32 lane = threadIdx.x % 32;
    if (warp >= (size_t)n_tokens * n_heads) return;
    const u32 t = warp / n_heads, h = warp % n_heads, kvh = h / (n_heads / n_kv_heads);
    const u32 slot = slots[t], last = positions[t];
    float* out_row = out + warp * head_dim;
    if (slot >= n_slots || last >= max_len) {
        for (u32 d = lane; d < head_dim; d += 32) out_row[d] = SAPO_NAN;
        return;
    }
    float query[MAX_PER_LANE], acc[MAX_PER_LANE];
    const float* q_row = q + warp * head_dim;
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        query[j] = d < head_dim ? q_row[d] : 0.0f;
        acc[j] = 0.0f;
    }
    float running_max = -SAPO_INF, running_sum = 0.0f;
    for (u32 u = 0; u <= last; u++) {
        const size_t kv_row = (((size_t)slot * max_len + u) * n_kv_heads + kvh) * head_dim;
        float dot = 0.0f;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) dot += query[j] * k_cache[kv_row + d];
        }
        const float score = warp_sum(dot) * scale;
        const float new_max = fmaxf(running_max, score);
        const float correction = expf(running_max - new_max), p = expf(score - new_max);
        running_sum = running_sum * correction + p;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) acc[j] = acc[j] * correction + p * v_cache[kv_row + d];
        }
        running_max = new_max;
    }
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        if (d < head_dim) out_row[d] = acc[j] / running_sum;
    }
}
