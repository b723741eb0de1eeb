//! ggml's tensor types and their block sizes, which the reader needs for
//! every type (to check each tensor's bytes lie inside the file) even though
//! it dequantises only eight of them.

use std::fmt;

/// A ggml tensor type, with its id in the file (`ggml.h`'s `ggml_type`).
///
/// The names are ggml's own (`Q4_K`, not `Q4K`), as llama.cpp, gguf-py and
/// every model card write them.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 0: 32-bit float.
    F32,
    /// 1: IEEE half.
    F16,
    /// 2: blocks of 32: f16 scale, 4-bit values offset by 8.
    Q4_0,
    /// 3: blocks of 32: f16 scale and minimum, 4-bit values.
    Q4_1,
    /// 6: blocks of 32, 5-bit values.
    Q5_0,
    /// 7: blocks of 32, 5-bit values with a minimum.
    Q5_1,
    /// 8: blocks of 32: f16 scale, 8-bit signed values.
    Q8_0,
    /// 9: blocks of 32, 8-bit values with a precomputed sum.
    Q8_1,
    /// 10: super-blocks of 256, 2-bit.
    Q2_K,
    /// 11: super-blocks of 256, 3-bit.
    Q3_K,
    /// 12: super-blocks of 256: f16 scale and minimum, eight 6-bit sub-block
    /// scales and minima, 4-bit values.
    Q4_K,
    /// 13: super-blocks of 256, 5-bit.
    Q5_K,
    /// 14: super-blocks of 256: sixteen 8-bit sub-block scales, f16 scale,
    /// 6-bit values offset by 32.
    Q6_K,
    /// 15: super-blocks of 256, 8-bit (intermediate type of matmuls).
    Q8_K,
    /// 16.
    IQ2_XXS,
    /// 17.
    IQ2_XS,
    /// 18.
    IQ3_XXS,
    /// 19.
    IQ1_S,
    /// 20.
    IQ4_NL,
    /// 21.
    IQ3_S,
    /// 22.
    IQ2_S,
    /// 23.
    IQ4_XS,
    /// 24: 8-bit integer.
    I8,
    /// 25: 16-bit integer.
    I16,
    /// 26: 32-bit integer.
    I32,
    /// 27: 64-bit integer.
    I64,
    /// 28: 64-bit float.
    F64,
    /// 29.
    IQ1_M,
    /// 30: bfloat16.
    BF16,
    /// 34: ternary.
    TQ1_0,
    /// 35: ternary.
    TQ2_0,
    /// 39: microscaling FP4.
    MXFP4,
    /// 40: NVIDIA FP4.
    NVFP4,
    /// 41: 1-bit.
    Q1_0,
    /// An id this reader does not know (ggml adds types over time); its
    /// tensors' sizes cannot be computed, so their data cannot be read.
    Unknown(u32),
}

impl GgmlType {
    /// The type of id `id` (`Unknown` for ids this reader does not know).
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            other => Unknown(other),
        }
    }

    /// `(elements per block, bytes per block)`, as gguf-py's
    /// `GGML_QUANT_SIZES` (from ggml's `type_traits`); `None` for `Unknown`.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        use GgmlType::*;
        const QK_K: u64 = 256;
        Some(match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => (1, 2),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
            NVFP4 => (64, 4 + 32),
            Q1_0 => (128, 2 + 16),
            Unknown(_) => return None,
        })
    }

    /// Whether [`GgufFile::tensor_f32`](super::GgufFile::tensor_f32) can
    /// dequantise this type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q4_K | Q6_K)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Unknown(id) => write!(formatter, "unknown type id {id}"),
            known => fmt::Debug::fmt(known, formatter),
        }
    }
}
