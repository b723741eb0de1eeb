// The optimizer phase: the AdamW and RMSprop updates, the EMA of the
// weights, and gradient clipping's sum of squares and scaling. Launched by
// src/ops/optim.rs; on the CPU these are methods of cpu/mod.rs over
// sapo-core's optim/ and ema.rs.

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

// partials[block] = Σ x² over the block's grid-stride elements, in f64; the
// host adds the partials in block order.
extern "C" __global__ void sum_of_squares_partials(double* partials, const float* x, u64 n) {
    __shared__ double shared[32];
    double acc = 0.0;
    for (size_t i = global_index(); i < n; i += global_stride()) acc += (double)x[i] * (double)x[i];
    acc = block_sum_f64(acc, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

extern "C" __global__ void scale(float* x, float factor, u64 n) {
    for (size_t i = global_index(); i < n; i += global_stride()) x[i] *= factor;
}
