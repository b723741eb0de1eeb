// Rotary position embeddings, launched by src/ops/rope.rs (sapo-core's
// cpu/rope.rs).

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
