// sapo-cuda kernels: one CUDA C++ source compiled at run time by NVRTC.
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

// --- Elementwise --------------------------------------------------------------

extern "C" __global__ void add_bias(float* out, const float* bias, u32 rows, u32 cols) {
    const size_t n = (size_t)rows * cols;
    for (size_t i = global_index(); i < n; i += global_stride()) out[i] += bias[i % cols];
}

extern "C" __global__ void add(float* out, const float* a, const float* b, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) out[i] = a[i] + b[i];
}

extern "C" __global__ void add_assign(float* acc, const float* x, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) acc[i] += x[i];
}

extern "C" __global__ void scale(float* x, float factor, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) x[i] *= factor;
}

// bf16 bits of x rounded to nearest even, bit for bit as half::bf16::from_f32
// (the CPU reference): a NaN keeps its sign and top payload bits and is made
// quiet; a finite value that rounds past the largest bf16 becomes ±∞.
extern "C" __global__ void round_to_bf16(unsigned short* out, const float* x, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) {
        const u32 bits = __float_as_uint(x[i]);
        u32 rounded;
        if ((bits & 0x7fffffffu) > 0x7f800000u) {
            rounded = (bits >> 16) | 0x0040u;
        } else {
            const bool round_up = (bits & 0x8000u) != 0 && (bits & 0x17fffu) != 0;
            rounded = (bits >> 16) + (round_up ? 1u : 0u);
        }
        out[i] = (unsigned short)rounded;
    }
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

// --- Column sums (bias and RMSNorm weight gradients) ---------------------------

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

// --- Embedding --------------------------------------------------------------------

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

// --- RMSNorm ----------------------------------------------------------------------

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

// --- RoPE ---------------------------------------------------------------------------

// Hugging Face's half-split rotation. The frequency and angle are formed as
// the CPU reference forms them (f32 `2i/D`, f64 power, f32 reciprocal and
// product, f64 cos/sin rounded to f32), so both backends rotate by the same
// f32 cos/sin. `direction` −1 rotates back (the backward).
extern "C" __global__ void rope(float* x, const u32* positions, u32 n_tokens, u32 n_heads, u32 head_dim,
                                double theta, float direction) {
    const u32 half = head_dim / 2;
    const size_t n = (size_t)n_tokens * n_heads * half;
    for (size_t index = global_index(); index < n; index += global_stride()) {
        const u32 i = index % half;
        const size_t token_head = index / half;
        const u32 t = token_head / n_heads;
        const float exponent = (float)(2 * i) / (float)head_dim;
        const float inv_freq = 1.0f / (float)pow(theta, (double)exponent);
        const double angle = (double)((float)positions[t] * inv_freq);
        const float c = (float)cos(angle), s = direction * (float)sin(angle);
        float* head = x + token_head * head_dim;
        const float x0 = head[i], x1 = head[i + half];
        head[i] = x0 * c - x1 * s;
        head[i + half] = x1 * c + x0 * s;
    }
}

// --- Attention ----------------------------------------------------------------------

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

// --- Key/value cache ------------------------------------------------------------------

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

// --- Log-probabilities -------------------------------------------------------------------

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

// --- Optimizers, averaging, norms ------------------------------------------------------------

// torch's lerp for f32, as the CPU reference writes it.
__device__ __forceinline__ float torch_lerp(float start, float end, float weight) {
    const float difference = end - start;
    return fabsf(weight) < 0.5f ? fmaf(weight, difference, start) : fmaf(weight - 1.0f, difference, end);
}

extern "C" __global__ void adamw_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                                      float weight_decay_factor, float one_minus_beta1, float beta2,
                                      float one_minus_beta2, float bias_correction2_sqrt, float eps,
                                      float neg_step_size, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) {
        // __fmul_rn/__fadd_rn are never contracted into FMAs, so each step
        // rounds where the CPU reference's does and the result is bit-identical.
        const float g = grads[i];
        float p = __fmul_rn(params[i], weight_decay_factor);
        const float m = torch_lerp(exp_avg[i], g, one_minus_beta1);
        const float v = fmaf(__fmul_rn(one_minus_beta2, g), g, __fmul_rn(exp_avg_sq[i], beta2));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bias_correction2_sqrt), eps);
        p = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step_size, m), denom));
        params[i] = p;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
    }
}

extern "C" __global__ void rmsprop_step(float* params, const float* grads, float* square_avg, float weight_decay,
                                        float alpha, float one_minus_alpha, float eps, float neg_lr, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) {
        float g = grads[i];
        const float p = params[i];
        if (weight_decay != 0.0f) g = fmaf(p, weight_decay, g);
        const float s = fmaf(__fmul_rn(one_minus_alpha, g), g, __fmul_rn(square_avg[i], alpha));
        const float denom = __fadd_rn(__fsqrt_rn(s), eps);
        square_avg[i] = s;
        params[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_lr, g), denom));
    }
}

extern "C" __global__ void ema_update(float* ema, const float* params, float decay, float keep, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) ema[i] = __fadd_rn(__fmul_rn(decay, ema[i]), __fmul_rn(keep, params[i]));
}

// --- Tiled attention (head_dim ≤ 128) ------------------------------------------------------------
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
__device__ __forceinline__ void attention_forward_tiled_impl(float* out, float* lse, const float* q, const float* k,
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
__device__ __forceinline__ void attention_backward_dq_tiled_impl(float* dq, const float* dout, const float* q, const float* k,
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
__device__ __forceinline__ void attention_backward_dkv_tiled_impl(float* dk, float* dv, const float* dout, const float* q,
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
extern "C" __global__ void attention_forward_tiled_d64(float* out, float* lse, const float* q, const float* k,
                                                   const float* v, const u32* seq_starts, u32 n_heads,
                                                   u32 n_kv_heads, u32 head_dim, float scale) {
    attention_forward_tiled_impl<2>(out, lse, q, k, v, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_forward_tiled_d128(float* out, float* lse, const float* q, const float* k,
                                                   const float* v, const u32* seq_starts, u32 n_heads,
                                                   u32 n_kv_heads, u32 head_dim, float scale) {
    attention_forward_tiled_impl<4>(out, lse, q, k, v, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dq_tiled_d64(float* dq, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta,
                                                       const u32* seq_starts, u32 n_heads, u32 n_kv_heads,
                                                       u32 head_dim, float scale) {
    attention_backward_dq_tiled_impl<2>(dq, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dq_tiled_d128(float* dq, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta,
                                                       const u32* seq_starts, u32 n_heads, u32 n_kv_heads,
                                                       u32 head_dim, float scale) {
    attention_backward_dq_tiled_impl<4>(dq, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dkv_tiled_d64(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const u32* seq_starts, u32 n_heads,
                                                        u32 n_kv_heads, u32 head_dim, float scale) {
    attention_backward_dkv_tiled_impl<2>(dk, dv, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

extern "C" __global__ void attention_backward_dkv_tiled_d128(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const u32* seq_starts, u32 n_heads,
                                                        u32 n_kv_heads, u32 head_dim, float scale) {
    attention_backward_dkv_tiled_impl<4>(dk, dv, dout, q, k, v, lse, delta, seq_starts, n_heads, n_kv_heads, head_dim, scale);
}

// --- Deterministic scatter-adds ---------------------------------------------------------------
//
// Float atomics add in whatever order threads arrive, so two runs of a step
// could differ in the last bits. These kernels fix the order instead.

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

// partials[block] = Σ x² over the block's grid-stride elements, in f64; the
// host adds the partials in block order.
extern "C" __global__ void sum_of_squares_partials(double* partials, const float* x, u64 n) {
    __shared__ double shared[32];
    double acc = 0.0;
    for (size_t i = global_index(); i < n; i += global_stride()) acc += (double)x[i] * (double)x[i];
    acc = block_sum_f64(acc, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
