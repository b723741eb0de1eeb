// Rounding to bf16 for the products on bf16 operands, launched by
// src/ops/matmul_bf16.rs (sapo-core's cpu/matmul_bf16.rs); the products
// themselves run in cuBLAS.

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
