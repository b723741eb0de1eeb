//! Matrix products on bf16 operands with f32 sums and an f32 output.
//!
//! Where the CPU has AVX-512 BF16 (feature `fast`, detected at run time),
//! the products run on `vdpbf16ps`, which multiplies pairs of bf16 values
//! exactly and adds them to f32 sums: 32 products an instruction against 16
//! for an f32 FMA, so 1.5–2.0× the f32 `gemm` crate on SmolLM2's layer
//! shapes here (`cargo bench -p sapo-core --bench model_step -- shapes`). Elsewhere
//! the operands are widened to f32 (exact) and multiplied by the f32 GEMM.
//! Both are the same definition — exact products, f32 sums — and differ
//! only in summation order (and `vdpbf16ps` treats subnormal inputs and
//! sums as zero), about 1e-7 relative; `widened` keeps the portable path
//! callable for the tests that compare the two.
//!
//! The native path is a small BLIS-style GEMM: `op(b)` is packed block of
//! `KC` depths by block into panels of `NR` columns, each element a bf16
//! pair `(k, k+1)`; threads take blocks of `MC` rows of `op(a)`, pack them
//! into panels of `MR` rows the same way, and run an `MR × NR` kernel that
//! keeps its 24 sums in registers.

use alloc::vec::Vec;

use half::bf16;

use super::error::{CpuError, check_len};
use super::matmul::matmul;
use super::par;
use crate::backend::MatmulSpec;

/// `out (=|+=) op(a) · op(b)` per [`MatmulSpec`], with bf16 operands, exact
/// products and f32 sums (see the module docs for the two paths).
///
/// ```
/// use half::bf16;
/// use sapo_core::backend::MatmulSpec;
/// use sapo_core::cpu::ops::matmul_bf16;
/// let spec = MatmulSpec { m: 1, k: 2, n: 1, transpose_a: false, transpose_b: false, accumulate: true };
/// let (a, b) = ([bf16::from_f32(1.0), bf16::from_f32(2.0)], [bf16::from_f32(3.0), bf16::from_f32(4.0)]);
/// let mut out = [10.0_f32];
/// matmul_bf16(&mut out, &a, &b, spec)?;
/// assert_eq!(out, [21.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// [`CpuError::LengthMismatch`] when a slice's length is not its matrix's.
pub fn matmul_bf16(out: &mut [f32], a: &[bf16], b: &[bf16], spec: MatmulSpec) -> Result<(), CpuError> {
    check_len("matmul_bf16", "a", a.len(), spec.a_len())?;
    check_len("matmul_bf16", "b", b.len(), spec.b_len())?;
    check_len("matmul_bf16", "out", out.len(), spec.out_len())?;
    #[cfg(all(feature = "fast", target_arch = "x86_64"))]
    if native::available() && spec.k > 0 {
        native::matmul(out, a, b, &spec);
        return Ok(());
    }
    widened(out, a, b, spec)
}

/// `out[i] = bf16(x[i])`, to nearest even, in chunks across threads with
/// feature `fast` (bf16 mixed precision rounds every weight each pass).
pub(crate) fn round_to_bf16(out: &mut [bf16], x: &[f32]) {
    #[allow(unused_imports)]
    use super::par::prelude::*;
    par::chunks_mut!(out, par::CHUNK).zip(par::chunks!(x, par::CHUNK)).for_each(|(out, x)| {
        out.iter_mut().zip(x).for_each(|(rounded, &value)| *rounded = bf16::from_f32(value));
    });
}

/// The portable path: both operands widened to f32 (exact), then the f32
/// GEMM, whose products of widened bf16 values are exact too.
///
/// # Errors
/// [`CpuError::LengthMismatch`] when a slice's length is not its matrix's.
pub fn widened(out: &mut [f32], a: &[bf16], b: &[bf16], spec: MatmulSpec) -> Result<(), CpuError> {
    let widen = |values: &[bf16]| values.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    matmul(out, &widen(a), &widen(b), spec)
}

#[cfg(all(feature = "fast", target_arch = "x86_64"))]
mod native {
    use alloc::vec::Vec;
    use core::arch::x86_64::{
        __m512, __m512bh, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use half::bf16;
    use rayon::prelude::*;

    use crate::backend::MatmulSpec;

    /// Rows of `op(a)` a kernel call covers.
    const MR: usize = 6;
    /// Columns of `op(b)` a kernel call covers (four vectors of 16 f32 sums).
    const NR: usize = 64;
    /// Depths (`k` values) per packed block: a kernel call's panels of `op(a)`
    /// (12 KB) and `op(b)` (128 KB) stay in the L1 and L2 caches. 256, 384 and
    /// 512 measured up to 10 % slower on SmolLM2's shapes; 1024 holds most of
    /// their depths in one block, so `out` is read and written once.
    const KC: usize = 1024;
    /// Rows of `op(a)` per thread task.
    const MC: usize = 48;

    /// 16-lane vectors per kernel row.
    const NV: usize = NR / 16;

    /// Whether this CPU runs `vdpbf16ps` (checked once, then cached by std).
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }

    /// A bf16 pair `(lo, hi)` as `vdpbf16ps` reads it: `lo` in the low half.
    fn pair(lo: bf16, hi: Option<bf16>) -> u32 {
        u32::from(lo.to_bits()) | hi.map_or(0, |hi| u32::from(hi.to_bits()) << 16)
    }

    /// Packs `op(b)[k0..k0 + kc, ..]` into panels of [`NR`] columns, laid
    /// out `[panel][pair][column]`; zero past the matrix's edges.
    fn pack_b(dst: &mut Vec<u32>, b: &[bf16], spec: &MatmulSpec, k0: usize, kc: usize) {
        let (k, n, pairs) = (spec.k, spec.n, kc.div_ceil(2));
        dst.clear();
        dst.resize(n.div_ceil(NR) * pairs * NR, 0);
        dst.par_chunks_mut(pairs * NR).enumerate().for_each(|(panel, out)| {
            let first = panel * NR;
            let cols = NR.min(n - first);
            if spec.transpose_b {
                // b is [n, k]: a column's depths are contiguous.
                for c in 0..cols {
                    let column = &b[(first + c) * k + k0..][..kc];
                    for (p, two) in column.chunks(2).enumerate() {
                        out[p * NR + c] = pair(two[0], two.get(1).copied());
                    }
                }
            } else {
                // b is [k, n]: a depth's columns are contiguous.
                for p in 0..pairs {
                    let lo = &b[(k0 + 2 * p) * n + first..][..cols];
                    let hi = (2 * p + 1 < kc).then(|| &b[(k0 + 2 * p + 1) * n + first..][..cols]);
                    for (c, slot) in out[p * NR..][..cols].iter_mut().enumerate() {
                        *slot = pair(lo[c], hi.map(|hi| hi[c]));
                    }
                }
            }
        });
    }

    /// Packs rows `first..first + rows` of `op(a)`, depths `k0..k0 + kc`,
    /// into panels of [`MR`] rows laid out `[panel][pair][row]`.
    fn pack_a(dst: &mut Vec<u32>, a: &[bf16], spec: &MatmulSpec, first: usize, rows: usize, k0: usize, kc: usize) {
        let (m, k, pairs) = (spec.m, spec.k, kc.div_ceil(2));
        dst.clear();
        dst.resize(rows.div_ceil(MR) * pairs * MR, 0);
        for (panel, out) in dst.chunks_mut(pairs * MR).enumerate() {
            let top = first + panel * MR;
            let height = MR.min(first + rows - top);
            if spec.transpose_a {
                // a is [k, m]: a depth's rows are contiguous.
                for p in 0..pairs {
                    let lo = &a[(k0 + 2 * p) * m + top..][..height];
                    let hi = (2 * p + 1 < kc).then(|| &a[(k0 + 2 * p + 1) * m + top..][..height]);
                    for (r, slot) in out[p * MR..][..height].iter_mut().enumerate() {
                        *slot = pair(lo[r], hi.map(|hi| hi[r]));
                    }
                }
            } else {
                // a is [m, k]: a row's depths are contiguous.
                for r in 0..height {
                    let row = &a[(top + r) * k + k0..][..kc];
                    for (p, two) in row.chunks(2).enumerate() {
                        out[p * MR + r] = pair(two[0], two.get(1).copied());
                    }
                }
            }
        }
    }

    /// `c (=|+=)` one `MR × NR` tile: the sum over `pairs` depth pairs of
    /// the packed panels `a` and `b`; only `rows × cols` of it is written.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16; `a` holds `pairs · MR` and `b`
    /// `pairs · NR` elements; `c` is valid for `rows` rows of `cols`
    /// elements, `ldc` apart, with `rows ≤ MR` and `cols ≤ NR`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(pairs: usize, a: &[u32], b: &[u32], c: *mut f32, ldc: usize, rows: usize, cols: usize, add: bool) {
        let mut sums = [[_mm512_setzero_ps(); NV]; MR];
        for (a, b) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(pairs) {
            // SAFETY: `b` is one pair's NR = 16·NV packed u32, read 16 at a time.
            let columns: [__m512bh; NV] = core::array::from_fn(|v| unsafe {
                core::mem::transmute::<_, __m512bh>(_mm512_loadu_si512(b.as_ptr().add(16 * v).cast()))
            });
            for (row, &value) in sums.iter_mut().zip(a) {
                // Both are 512 bits: 16 bf16 pairs.
                let broadcast: __m512bh = unsafe { core::mem::transmute(_mm512_set1_epi32(value as i32)) };
                for (sum, &column) in row.iter_mut().zip(&columns) {
                    *sum = _mm512_dpbf16_ps(*sum, broadcast, column);
                }
            }
        }
        let store = |row: *mut f32, v: usize, sum: __m512| {
            // SAFETY: full tiles only: 16 elements at `row + 16·v`, inside
            // the caller's `cols = NR` columns.
            unsafe {
                let value = if add { _mm512_add_ps(sum, _mm512_loadu_ps(row.add(16 * v))) } else { sum };
                _mm512_storeu_ps(row.add(16 * v), value);
            }
        };
        if rows == MR && cols == NR {
            for (r, row_sums) in sums.iter().enumerate() {
                for (v, &sum) in row_sums.iter().enumerate() {
                    // SAFETY: row r < rows of the caller's tile.
                    store(unsafe { c.add(r * ldc) }, v, sum);
                }
            }
            return;
        }
        let mut tile = [[0.0_f32; NR]; MR];
        for (row, row_sums) in tile.iter_mut().zip(&sums) {
            for (v, &sum) in row_sums.iter().enumerate() {
                // SAFETY: 16 elements inside `row`, which has NR = 16·NV.
                unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), sum) };
            }
        }
        for (r, values) in tile.iter().enumerate().take(rows) {
            // SAFETY: r < rows and j < cols: inside the caller's tile.
            let row = unsafe { core::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
            for (out, &value) in row.iter_mut().zip(values) {
                *out = if add { *out + value } else { value };
            }
        }
    }

    /// The product; the caller checked the lengths, that `k > 0` and
    /// [`available`].
    pub(super) fn matmul(out: &mut [f32], a: &[bf16], b: &[bf16], spec: &MatmulSpec) {
        let (m, k, n) = (spec.m, spec.k, spec.n);
        if m == 0 || n == 0 {
            return;
        }
        let mut packed_b = Vec::new();
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let pairs = kc.div_ceil(2);
            pack_b(&mut packed_b, b, spec, k0, kc);
            // The first block overwrites unless the spec accumulates.
            let add = spec.accumulate || k0 > 0;
            let packed_b = &packed_b;
            out.par_chunks_mut(MC * n).enumerate().for_each(|(block, c)| {
                let first = block * MC;
                let rows = MC.min(m - first);
                let mut packed_a = Vec::new();
                pack_a(&mut packed_a, a, spec, first, rows, k0, kc);
                for (panel_b, b_panel) in packed_b.chunks_exact(pairs * NR).enumerate() {
                    let cols = NR.min(n - panel_b * NR);
                    for (panel_a, a_panel) in packed_a.chunks_exact(pairs * MR).enumerate() {
                        let height = MR.min(rows - panel_a * MR);
                        let corner = panel_a * MR * n + panel_b * NR;
                        // SAFETY: `available()` held; the panels hold `pairs`
                        // pairs each; the tile's `height` rows of `cols`
                        // columns at `corner`, `n` apart, lie inside `c`
                        // (rows × n of `out`).
                        unsafe { kernel(pairs, a_panel, b_panel, c.as_mut_ptr().add(corner), n, height, cols, add) };
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SapoRng;
    use alloc::vec;

    fn random(rng: &mut SapoRng, len: usize) -> Vec<bf16> {
        (0..len).map(|_| bf16::from_f64(rng.standard_normal())).collect()
    }

    #[test]
    fn matches_the_widened_product_in_every_layout_and_at_ragged_edges() {
        // Shapes that cross the kernel's tiles (6 × 64), the thread blocks
        // (48 rows) and the depth blocks (1024), odd depths included.
        #[cfg(all(feature = "fast", target_arch = "x86_64"))]
        if !native::available() {
            std::println!("no AVX-512 BF16 on this CPU: both sides take the widened path");
        }
        let mut rng = SapoRng::from_seed_u64(11);
        for &(m, k, n) in
            &[(1, 1, 1), (7, 3, 65), (50, 513, 130), (97, 1025, 64), (6, 1100, 200), (5, 2049, 70), (130, 2, 5)]
        {
            for layout in 0..8 {
                let spec = MatmulSpec {
                    m,
                    k,
                    n,
                    transpose_a: layout & 1 != 0,
                    transpose_b: layout & 2 != 0,
                    accumulate: layout & 4 != 0,
                };
                let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
                let start: Vec<f32> = random(&mut rng, m * n).iter().map(|x| x.to_f32()).collect();
                let (mut fast, mut portable) = (start.clone(), start.clone());
                matmul_bf16(&mut fast, &a, &b, spec).unwrap();
                widened(&mut portable, &a, &b, spec).unwrap();
                let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let difference: Vec<f32> = fast.iter().zip(&portable).map(|(x, y)| x - y).collect();
                let error = norm(&difference) / norm(&portable);
                assert!(error < 1e-6, "{spec:?}: relative difference {error:e}");
            }
        }
    }

    #[test]
    fn an_empty_depth_overwrites_or_keeps_the_output() {
        let mut out = vec![3.0_f32; 4];
        let spec = MatmulSpec { m: 2, k: 0, n: 2, transpose_a: false, transpose_b: false, accumulate: true };
        matmul_bf16(&mut out, &[], &[], spec).unwrap();
        assert_eq!(out, [3.0; 4]);
        matmul_bf16(&mut out, &[], &[], MatmulSpec { accumulate: false, ..spec }).unwrap();
        assert_eq!(out, [0.0; 4]);
    }

    #[test]
    fn short_operands_are_refused() {
        let spec = MatmulSpec { m: 2, k: 2, n: 2, transpose_a: false, transpose_b: false, accumulate: false };
        let error = matmul_bf16(&mut [0.0; 4], &[bf16::ZERO; 3], &[bf16::ZERO; 4], spec).unwrap_err();
        assert_eq!(alloc::format!("{error}"), "matmul_bf16: buffer `a` has 3 elements, expected 4");
        assert!(matches!(error, CpuError::LengthMismatch { .. }), "{error:?}");
    }
}
