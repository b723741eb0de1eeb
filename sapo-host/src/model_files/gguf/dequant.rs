//! Dequantisation of ggml's block formats to f32.
//!
//! Each function follows `dequantize_row_*` in llama.cpp's
//! `ggml/src/ggml-quants.c` (block structs in `ggml-common.h`) and computes
//! in the same order as gguf-py's `gguf/quants.py`, which transformers uses
//! to load GGUF files, with no fused multiply-add: every product and sum is
//! one f32 rounding, so the results equal gguf-py's bit for bit.

use half::{bf16, f16};

use super::ggml_type::GgmlType;

/// Elements in a Q4_K/Q6_K super-block (`QK_K`).
const QK_K: usize = 256;

/// Dequantises `bytes`, a whole number of `ggml_type` blocks, into `out`,
/// which holds exactly their elements. Returns `false`, writing nothing, for
/// a type it does not dequantise.
pub(crate) fn dequantize(ggml_type: GgmlType, bytes: &[u8], out: &mut [f32]) -> bool {
    match ggml_type {
        GgmlType::F32 => f32_to_f32(bytes, out),
        GgmlType::F16 => f16_to_f32(bytes, out),
        GgmlType::BF16 => bf16_to_f32(bytes, out),
        GgmlType::Q8_0 => q8_0(bytes, out),
        GgmlType::Q4_0 => q4_0(bytes, out),
        GgmlType::Q4_1 => q4_1(bytes, out),
        GgmlType::Q4_K => q4_k(bytes, out),
        GgmlType::Q6_K => q6_k(bytes, out),
        _ => return false,
    }
    true
}

/// An f16 stored little-endian at `bytes[offset..offset + 2]`, widened
/// (exactly, as numpy's `astype(np.float32)` does).
fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[offset], bytes[offset + 1]])).to_f32()
}

fn f32_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

fn f16_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *value = f16_at(chunk, 0);
    }
}

/// bf16 is the top half of an f32: widening is a 16-bit shift.
fn bf16_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *value = bf16::from_bits(u16::from_le_bytes([chunk[0], chunk[1]])).to_f32();
    }
}

/// `block_q8_0` (34 bytes, 32 values): `d: f16`, `qs: [i8; 32]`; x = d·q.
fn q8_0(bytes: &[u8], out: &mut [f32]) {
    for (values, block) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
        let d = f16_at(block, 0);
        for (value, &quant) in values.iter_mut().zip(&block[2..34]) {
            *value = d * f32::from(quant as i8);
        }
    }
}

/// `block_q4_0` (18 bytes, 32 values): `d: f16`, `qs: [u8; 16]`; value j
/// is the low nibble of byte j, value j+16 the high nibble; x = d·(q − 8).
fn q4_0(bytes: &[u8], out: &mut [f32]) {
    for (values, block) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
        let d = f16_at(block, 0);
        let (low, high) = values.split_at_mut(16);
        for ((low, high), &byte) in low.iter_mut().zip(high).zip(&block[2..18]) {
            *low = d * f32::from((byte & 0x0F) as i8 - 8);
            *high = d * f32::from((byte >> 4) as i8 - 8);
        }
    }
}

/// `block_q4_1` (20 bytes, 32 values): `d: f16`, `m: f16`, `qs: [u8; 16]`,
/// nibbles as in Q4_0; x = d·q + m.
fn q4_1(bytes: &[u8], out: &mut [f32]) {
    for (values, block) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
        let (d, m) = (f16_at(block, 0), f16_at(block, 2));
        let (low, high) = values.split_at_mut(16);
        for ((low, high), &byte) in low.iter_mut().zip(high).zip(&block[4..20]) {
            *low = d * f32::from(byte & 0x0F) + m;
            *high = d * f32::from(byte >> 4) + m;
        }
    }
}

/// Sub-block `j`'s 6-bit scale and minimum from Q4_K's 12 packed bytes
/// (`get_scale_min_k4` in ggml-quants.c).
fn scale_min_k4(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

/// `block_q4_K` (144 bytes, 256 values): `d: f16`, `dmin: f16`,
/// `scales: [u8; 12]` (eight 6-bit scales and minima), `qs: [u8; 128]`.
/// Each 32 bytes of `qs` hold two sub-blocks of 32: low nibbles, then high;
/// x = (d·scale)·q − dmin·min.
fn q4_k(bytes: &[u8], out: &mut [f32]) {
    for (values, block) in out.chunks_exact_mut(QK_K).zip(bytes.chunks_exact(144)) {
        let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
        let scales = &block[4..16];
        let quants = &block[16..144];
        for (pair, (values, quants)) in values.chunks_exact_mut(64).zip(quants.chunks_exact(32)).enumerate() {
            let (scale_low, min_low) = scale_min_k4(2 * pair, scales);
            let (scale_high, min_high) = scale_min_k4(2 * pair + 1, scales);
            let (d_low, m_low) = (d * f32::from(scale_low), dmin * f32::from(min_low));
            let (d_high, m_high) = (d * f32::from(scale_high), dmin * f32::from(min_high));
            let (low, high) = values.split_at_mut(32);
            for ((low, high), &byte) in low.iter_mut().zip(high).zip(quants) {
                *low = d_low * f32::from(byte & 0x0F) - m_low;
                *high = d_high * f32::from(byte >> 4) - m_high;
            }
        }
    }
}

/// `block_q6_K` (210 bytes, 256 values): `ql: [u8; 128]` (low 4 bits),
/// `qh: [u8; 64]` (high 2 bits), `scales: [i8; 16]` (one per 16 values),
/// `d: f16`. Each half of 128 values takes 64 bytes of `ql` and 32 of `qh`;
/// x = (d·scale)·(q − 32).
fn q6_k(bytes: &[u8], out: &mut [f32]) {
    for (values, block) in out.chunks_exact_mut(QK_K).zip(bytes.chunks_exact(210)) {
        let d = f16_at(block, 208);
        // d·scale for each 16 values, as ggml and gguf-py round it before the product with q.
        let mut group_scales = [0f32; 16];
        for (group_scale, &scale) in group_scales.iter_mut().zip(&block[192..208]) {
            *group_scale = d * f32::from(scale as i8);
        }
        for half in 0..2 {
            let low_bits = &block[64 * half..64 * half + 64];
            let high_bits = &block[128 + 32 * half..128 + 32 * half + 32];
            let values = &mut values[128 * half..128 * half + 128];
            let group_scales = &group_scales[8 * half..8 * half + 8];
            for l in 0..32 {
                let group = l / 16;
                let (low, low_next, high) = (low_bits[l], low_bits[l + 32], high_bits[l]);
                let q1 = ((low & 0x0F) | ((high & 3) << 4)) as i8 - 32;
                let q2 = ((low_next & 0x0F) | (((high >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((low >> 4) | (((high >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((low_next >> 4) | (((high >> 6) & 3) << 4)) as i8 - 32;
                values[l] = group_scales[group] * f32::from(q1);
                values[l + 32] = group_scales[group + 2] * f32::from(q2);
                values[l + 64] = group_scales[group + 4] * f32::from(q3);
                values[l + 96] = group_scales[group + 6] * f32::from(q4);
            }
        }
    }
}
