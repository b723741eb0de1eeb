// Causal grouped-query attention over packed sequences, one warp per
// (token, head) row: any head_dim up to 256 (MAX_PER_LANE · 32). Heads up to
// 128 wide take attention_blocked.cu instead; attention_delta serves both.
// Launched by src/ops/attention.rs (sapo-core's cpu/attention.rs).

// One warp per (token, query head); each lane holds channels lane, lane+32, …
// Keys are visited in order with an online softmax (running max and sum).
extern "C" __global__ void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                             const u32* seq_starts, u32 n_starts, u32 n_tokens, u32 n_heads,
                                             u32 n_kv_heads, u32 head_dim, float scale) {
    const size_t warp = global_index() / 32;
    const u32 lane = threadIdx.x % 32;
    if (warp >= (size_t)n_tokens * n_heads) return;
    const u32 t = warp / n_heads, h = warp % n_heads, kvh = h / (n_heads / n_kv_heads);
    const u32 start = seq_starts[sequence_of(seq_starts, n_starts, t)];
    float query[MAX_PER_LANE], acc[MAX_PER_LANE];
    const float* q_row = q + ((size_t)t * n_heads + h) * head_dim;
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        query[j] = d < head_dim ? q_row[d] : 0.0f;
        acc[j] = 0.0f;
    }
    float running_max = -SAPO_INF, running_sum = 0.0f;
    for (u32 u = start; u <= t; u++) {
        const size_t kv_row = ((size_t)u * n_kv_heads + kvh) * head_dim;
        float dot = 0.0f;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) dot += query[j] * k[kv_row + d];
        }
        const float score = warp_sum(dot) * scale;
        const float new_max = fmaxf(running_max, score);
        const float correction = expf(running_max - new_max), p = expf(score - new_max);
        running_sum = running_sum * correction + p;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) acc[j] = acc[j] * correction + p * v[kv_row + d];
        }
        running_max = new_max;
    }
    float* out_row = out + ((size_t)t * n_heads + h) * head_dim;
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        if (d < head_dim) out_row[d] = acc[j] / running_sum;
    }
    if (lane == 0) lse[(size_t)t * n_heads + h] = running_max + logf(running_sum);
}

// delta[t, h] = dout[t, h]·out[t, h]: the softmax backward's row term.
extern "C" __global__ void attention_delta(float* delta, const float* dout, const float* out, u32 n_tokens,
                                           u32 n_heads, u32 head_dim) {
    const size_t warp = global_index() / 32;
    const u32 lane = threadIdx.x % 32;
    if (warp >= (size_t)n_tokens * n_heads) return;
    const float* a = dout + warp * head_dim;
    const float* b = out + warp * head_dim;
    float dot = 0.0f;
    for (u32 d = lane; d < head_dim; d += 32) dot += a[d] * b[d];
    dot = warp_sum(dot);
    if (lane == 0) delta[warp] = dot;
}

// dq: one warp per (token t, query head h), over keys u ≤ t of t's sequence:
// p = exp(q·k·scale − lse), ds = p·(dout·v − delta), dq += scale·ds·k.
extern "C" __global__ void attention_backward_dq(float* dq, const float* dout, const float* q, const float* k,
                                                 const float* v, const float* lse, const float* delta,
                                                 const u32* seq_starts, u32 n_starts, u32 n_tokens, u32 n_heads,
                                                 u32 n_kv_heads, u32 head_dim, float scale) {
    const size_t warp = global_index() / 32;
    const u32 lane = threadIdx.x % 32;
    if (warp >= (size_t)n_tokens * n_heads) return;
    const u32 t = warp / n_heads, h = warp % n_heads, kvh = h / (n_heads / n_kv_heads);
    const u32 start = seq_starts[sequence_of(seq_starts, n_starts, t)];
    float query[MAX_PER_LANE], grad_out[MAX_PER_LANE], acc[MAX_PER_LANE];
    const size_t row = warp * head_dim;
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        query[j] = d < head_dim ? q[row + d] : 0.0f;
        grad_out[j] = d < head_dim ? dout[row + d] : 0.0f;
        acc[j] = 0.0f;
    }
    const float row_lse = lse[warp], row_delta = delta[warp];
    for (u32 u = start; u <= t; u++) {
        const size_t kv_row = ((size_t)u * n_kv_heads + kvh) * head_dim;
        float score = 0.0f, dp = 0.0f;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) {
                score += query[j] * k[kv_row + d];
                dp += grad_out[j] * v[kv_row + d];
            }
        }
        score = warp_sum(score);
        dp = warp_sum(dp);
        const float p = expf(score * scale - row_lse);
        const float ds = p * (dp - row_delta) * scale;
        _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < head_dim) acc[j] += ds * k[kv_row + d];
        }
    }
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        if (d < head_dim) dq[row + d] += acc[j];
    }
}

// dk, dv: one warp per (key token u, key/value head), over the queries t ≥ u
// of u's sequence and the query heads of the group; no atomics, so the
// result does not depend on scheduling.
extern "C" __global__ void attention_backward_dkv(float* dk, float* dv, const float* dout, const float* q,
                                                  const float* k, const float* v, const float* lse,
                                                  const float* delta, const u32* seq_starts, u32 n_starts,
                                                  u32 n_tokens, u32 n_heads, u32 n_kv_heads, u32 head_dim,
                                                  float scale) {
    const size_t warp = global_index() / 32;
    const u32 lane = threadIdx.x % 32;
    if (warp >= (size_t)n_tokens * n_kv_heads) return;
    const u32 u = warp / n_kv_heads, kvh = warp % n_kv_heads, group = n_heads / n_kv_heads;
    const u32 end = seq_starts[sequence_of(seq_starts, n_starts, u) + 1];
    float key[MAX_PER_LANE], value[MAX_PER_LANE], dkey[MAX_PER_LANE], dvalue[MAX_PER_LANE];
    const size_t kv_row = warp * head_dim;
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        key[j] = d < head_dim ? k[kv_row + d] : 0.0f;
        value[j] = d < head_dim ? v[kv_row + d] : 0.0f;
        dkey[j] = 0.0f;
        dvalue[j] = 0.0f;
    }
    for (u32 t = u; t < end; t++) {
        for (u32 h = kvh * group; h < (kvh + 1) * group; h++) {
            const size_t qh = (size_t)t * n_heads + h;
            const size_t row = qh * head_dim;
            float score = 0.0f, dp = 0.0f;
            _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
                const u32 d = lane + 32 * j;
                if (d < head_dim) {
                    score += q[row + d] * key[j];
                    dp += dout[row + d] * value[j];
                }
            }
            score = warp_sum(score);
            dp = warp_sum(dp);
            const float p = expf(score * scale - lse[qh]);
            const float ds = p * (dp - delta[qh]) * scale;
            _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
                const u32 d = lane + 32 * j;
                if (d < head_dim) {
                    dkey[j] += ds * q[row + d];
                    dvalue[j] += p * dout[row + d];
                }
            }
        }
    }
    _Pragma("unroll") for (u32 j = 0; j < MAX_PER_LANE; j++) {
        const u32 d = lane + 32 * j;
        if (d < head_dim) {
            dk[kv_row + d] += dkey[j];
            dv[kv_row + d] += dvalue[j];
        }
    }
}
