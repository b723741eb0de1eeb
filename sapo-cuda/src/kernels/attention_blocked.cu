// Blocked attention (head_dim ≤ 128), launched by
// src/ops/attention_blocked.rs (sapo-core's cpu/attention_blocked.rs is the
// CPU's blocked path).
//
// One block per (tile of 32 queries or keys, head, sequence); 8 warps of 4
// rows each. A tile of 32 keys and values (or queries and output gradients)
// is staged in shared memory (rows padded to D + 1 floats where lanes read
// different rows, so the reads fall in different banks) and each lane takes
// one row of the tile: the 32 dot products of a row against the tile run in
// parallel, and the weighted sums over the tile broadcast each lane's weight
// with a shuffle. The grid's x extent covers the longest possible sequence
// (n_tokens); blocks past their sequence's end return at once.

#define TILE 32
#define ROWS_PER_WARP 4

template <u32 PER_LANE>
__device__ __forceinline__ void attention_forward_blocked_impl(float* out, float* lse, const float* q, const float* k,
                                                   const float* v, const u32* seq_starts, u32 n_heads,
                                                   u32 n_kv_heads, u32 head_dim, float scale) {
    extern __shared__ float shared[];
    const u32 D = head_dim, stride = D + 1;
    float* keys = shared;                  // [TILE][D + 1]
    float* values = shared + TILE * stride;  // [TILE][D]
    const u32 s = blockIdx.z, h = blockIdx.y, kvh = h / (n_heads / n_kv_heads);
    const u32 start = seq_starts[s], end = seq_starts[s + 1], len = end - start;
    const u32 q0 = blockIdx.x * TILE;
    if (q0 >= len) return;
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 last_query = min(q0 + TILE, len) - 1;  // relative to start
    float row_max[ROWS_PER_WARP], row_sum[ROWS_PER_WARP], acc[ROWS_PER_WARP][PER_LANE];
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
        row_max[i] = -SAPO_INF;
        row_sum[i] = 0.0f;
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) acc[i][j] = 0.0f;
    }
    for (u32 k0 = 0; k0 <= last_query; k0 += TILE) {
        __syncthreads();
        for (u32 index = threadIdx.x; index < TILE * D; index += blockDim.x) {
            const u32 r = index / D, d = index % D, key = k0 + r;
            const bool inside = key < len;
            const size_t row = ((size_t)(start + key) * n_kv_heads + kvh) * D + d;
            keys[r * stride + d] = inside ? k[row] : 0.0f;
            values[r * D + d] = inside ? v[row] : 0.0f;
        }
        __syncthreads();
        _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
            const u32 t = q0 + warp * ROWS_PER_WARP + i;
            if (t >= len || k0 > t) continue;  // warp-uniform
            const float* query = q + ((size_t)(start + t) * n_heads + h) * D;
            const u32 key = k0 + lane;
            const bool valid = key <= t;
            float score = 0.0f;
            for (u32 d = 0; d < D; d++) score += query[d] * keys[lane * stride + d];
            score = valid ? score * scale : -SAPO_INF;
            const float new_max = fmaxf(row_max[i], warp_max(score));
            const float correction = expf(row_max[i] - new_max);
            const float p = valid ? expf(score - new_max) : 0.0f;
            row_sum[i] = row_sum[i] * correction + warp_sum(p);
            _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) acc[i][j] *= correction;
            const u32 visible = min(TILE, t - k0 + 1);
            for (u32 r = 0; r < visible; r++) {
                const float weight = __shfl_sync(FULL_MASK, p, r);
                _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
                    const u32 d = lane + 32 * j;
                    if (d < D) acc[i][j] += weight * values[r * D + d];
                }
            }
            row_max[i] = new_max;
        }
    }
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
        const u32 t = q0 + warp * ROWS_PER_WARP + i;
        if (t >= len) continue;
        const size_t row = (size_t)(start + t) * n_heads + h;
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < D) out[row * D + d] = acc[i][j] / row_sum[i];
        }
        if (lane == 0) lse[row] = row_max[i] + logf(row_sum[i]);
    }
}

// dq += Σ_u ds·k_u, ds = p·(dout·v_u − delta)·scale, p = exp(q·k_u·scale − lse).
template <u32 PER_LANE>
__device__ __forceinline__ void attention_backward_dq_blocked_impl(float* dq, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta,
                                                       const u32* seq_starts, u32 n_heads, u32 n_kv_heads,
                                                       u32 head_dim, float scale) {
    extern __shared__ float shared[];
    const u32 D = head_dim, stride = D + 1;
    float* keys = shared;                    // [TILE][D + 1]
    float* values = shared + TILE * stride;  // [TILE][D + 1]
    const u32 s = blockIdx.z, h = blockIdx.y, kvh = h / (n_heads / n_kv_heads);
    const u32 start = seq_starts[s], end = seq_starts[s + 1], len = end - start;
    const u32 q0 = blockIdx.x * TILE;
    if (q0 >= len) return;
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 last_query = min(q0 + TILE, len) - 1;
    float acc[ROWS_PER_WARP][PER_LANE];
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++)
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) acc[i][j] = 0.0f;
    for (u32 k0 = 0; k0 <= last_query; k0 += TILE) {
        __syncthreads();
        for (u32 index = threadIdx.x; index < TILE * D; index += blockDim.x) {
            const u32 r = index / D, d = index % D, key = k0 + r;
            const bool inside = key < len;
            const size_t row = ((size_t)(start + key) * n_kv_heads + kvh) * D + d;
            keys[r * stride + d] = inside ? k[row] : 0.0f;
            values[r * stride + d] = inside ? v[row] : 0.0f;
        }
        __syncthreads();
        _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
            const u32 t = q0 + warp * ROWS_PER_WARP + i;
            if (t >= len || k0 > t) continue;
            const size_t qh = (size_t)(start + t) * n_heads + h;
            const float* query = q + qh * D;
            const float* grad_out = dout + qh * D;
            const bool valid = k0 + lane <= t;
            float score = 0.0f, dp = 0.0f;
            for (u32 d = 0; d < D; d++) {
                score += query[d] * keys[lane * stride + d];
                dp += grad_out[d] * values[lane * stride + d];
            }
            const float p = valid ? expf(score * scale - lse[qh]) : 0.0f;
            const float ds = p * (dp - delta[qh]) * scale;
            const u32 visible = min(TILE, t - k0 + 1);
            for (u32 r = 0; r < visible; r++) {
                const float weight = __shfl_sync(FULL_MASK, ds, r);
                _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
                    const u32 d = lane + 32 * j;
                    if (d < D) acc[i][j] += weight * keys[r * stride + d];
                }
            }
        }
    }
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
        const u32 t = q0 + warp * ROWS_PER_WARP + i;
        if (t >= len) continue;
        const size_t row = ((size_t)(start + t) * n_heads + h) * D;
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < D) dq[row + d] += acc[i][j];
        }
    }
}

// dk_u += Σ_{t ≥ u, h in group} ds·q_t, dv_u += Σ p·dout_t: one block per
// (tile of 32 keys, key/value head, sequence); queries and output gradients
// staged a tile at a time, lanes over queries.
template <u32 PER_LANE>
__device__ __forceinline__ void attention_backward_dkv_blocked_impl(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const u32* seq_starts, u32 n_heads,
                                                        u32 n_kv_heads, u32 head_dim, float scale) {
    extern __shared__ float shared[];
    const u32 D = head_dim, stride = D + 1;
    float* queries = shared;                       // [TILE][D + 1]
    float* grads = shared + TILE * stride;         // [TILE][D + 1]
    float* tile_lse = shared + 2 * TILE * stride;  // [TILE]
    float* tile_delta = tile_lse + TILE;           // [TILE]
    const u32 s = blockIdx.z, kvh = blockIdx.y, group = n_heads / n_kv_heads;
    const u32 start = seq_starts[s], end = seq_starts[s + 1], len = end - start;
    const u32 k0 = blockIdx.x * TILE;
    if (k0 >= len) return;
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float dkey[ROWS_PER_WARP][PER_LANE], dvalue[ROWS_PER_WARP][PER_LANE];
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++)
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) dkey[i][j] = dvalue[i][j] = 0.0f;
    for (u32 h = kvh * group; h < (kvh + 1) * group; h++) {
        for (u32 t0 = k0; t0 < len; t0 += TILE) {
            __syncthreads();
            for (u32 index = threadIdx.x; index < TILE * D; index += blockDim.x) {
                const u32 r = index / D, d = index % D, t = t0 + r;
                const bool inside = t < len;
                const size_t row = ((size_t)(start + t) * n_heads + h) * D + d;
                queries[r * stride + d] = inside ? q[row] : 0.0f;
                grads[r * stride + d] = inside ? dout[row] : 0.0f;
            }
            if (threadIdx.x < TILE) {
                const u32 t = t0 + threadIdx.x;
                const size_t qh = (size_t)(start + t) * n_heads + h;
                tile_lse[threadIdx.x] = t < len ? lse[qh] : 0.0f;
                tile_delta[threadIdx.x] = t < len ? delta[qh] : 0.0f;
            }
            __syncthreads();
            _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
                const u32 u = k0 + warp * ROWS_PER_WARP + i;
                if (u >= len) continue;
                const size_t kv_row = ((size_t)(start + u) * n_kv_heads + kvh) * D;
                const u32 t = t0 + lane;
                const bool valid = t >= u && t < len;
                float score = 0.0f, dp = 0.0f;
                for (u32 d = 0; d < D; d++) {
                    score += queries[lane * stride + d] * k[kv_row + d];
                    dp += grads[lane * stride + d] * v[kv_row + d];
                }
                const float p = valid ? expf(score * scale - tile_lse[lane]) : 0.0f;
                const float ds = p * (dp - tile_delta[lane]) * scale;
                for (u32 r = 0; r < TILE; r++) {
                    const float weight_k = __shfl_sync(FULL_MASK, ds, r);
                    const float weight_v = __shfl_sync(FULL_MASK, p, r);
                    _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
                        const u32 d = lane + 32 * j;
                        if (d < D) {
                            dkey[i][j] += weight_k * queries[r * stride + d];
                            dvalue[i][j] += weight_v * grads[r * stride + d];
                        }
                    }
                }
            }
        }
    }
    _Pragma("unroll") for (u32 i = 0; i < ROWS_PER_WARP; i++) {
        const u32 u = k0 + warp * ROWS_PER_WARP + i;
        if (u >= len) continue;
        const size_t kv_row = ((size_t)(start + u) * n_kv_heads + kvh) * D;
        _Pragma("unroll") for (u32 j = 0; j < PER_LANE; j++) {
            const u32 d = lane + 32 * j;
            if (d < D) {
                dk[kv_row + d] += dkey[i][j];
                dv[kv_row + d] += dvalue[i][j];
            }
        }
    }
}

// Entry points per head width: D ≤ 64 (2 channels per lane) and D ≤ 128 (4).
extern "C" __global__ void attention_forward_blocked_d64(float* out, float* lse, const float* q, const float* k,
                                                   const float* v, const u32* seq_starts, u32 n_heads,
                                                   u32 n_kv_heads, u32 head_dim, float scale) {
    attention_forward_blocked_impl<2>(out, lse, q, k, v, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_forward_blocked_d128(float* out, float* lse, const float* q, const float* k,
                                                   const float* v, const u32* seq_starts, u32 n_heads,
                                                   u32 n_kv_heads, u32 head_dim, float scale) {
    attention_forward_blocked_impl<4>(out, lse, q, k, v, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dq_blocked_d64(float* dq, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta,
                                                       const u32* seq_starts, u32 n_heads, u32 n_kv_heads,
                                                       u32 head_dim, float scale) {
    attention_backward_dq_blocked_impl<2>(dq, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dq_blocked_d128(float* dq, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta,
                                                       const u32* seq_starts, u32 n_heads, u32 n_kv_heads,
                                                       u32 head_dim, float scale) {
    attention_backward_dq_blocked_impl<4>(dq, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dkv_blocked_d64(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const u32* seq_starts, u32 n_heads,
                                                        u32 n_kv_heads, u32 head_dim, float scale) {
    attention_backward_dkv_blocked_impl<2>(dk, dv, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dkv_blocked_d128(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const u32* seq_starts, u32 n_heads,
                                                        u32 n_kv_heads, u32 head_dim, float scale) {
    attention_backward_dkv_blocked_impl<4>(dk, dv, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}
