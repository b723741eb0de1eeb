//! Matrix products: ndarray's `general_mat_mul` (the default), and a plain
//! triple loop accumulating in f64 that tests compare it with.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

use super::error::{CpuError, check_len};
use super::float::CpuFloat;
use crate::backend::MatmulSpec;

fn checked(out: usize, a: usize, b: usize, spec: &MatmulSpec) -> Result<(), CpuError> {
    check_len("matmul", "a", a, spec.a_len())?;
    check_len("matmul", "b", b, spec.b_len())?;
    check_len("matmul", "out", out, spec.out_len())
}

/// A row-major `[rows, cols]` view, or the transpose of a `[cols, rows]` one.
fn view<F>(data: &[F], rows: usize, cols: usize, transposed: bool) -> ArrayView2<'_, F> {
    let shape = if transposed { (rows, cols).strides((1, rows)) } else { (rows, cols).strides((cols, 1)) };
    // The length was checked against rows·cols by the caller, so the shape fits.
    ArrayView2::from_shape(shape, data).expect("length checked against the shape")
}

/// `out (=|+=) op(a) · op(b)` per [`MatmulSpec`].
///
/// ```
/// use sapo_core::backend::MatmulSpec;
/// use sapo_core::cpu::ops::matmul;
/// let spec = MatmulSpec { m: 1, k: 2, n: 1, transpose_a: false, transpose_b: false, accumulate: true };
/// let mut out = [10.0_f64];
/// matmul(&mut out, &[1.0, 2.0], &[3.0, 4.0], spec)?;
/// assert_eq!(out, [21.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// [`CpuError::LengthMismatch`].
pub fn matmul<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], spec: MatmulSpec) -> Result<(), CpuError> {
    checked(out.len(), a.len(), b.len(), &spec)?;
    if spec.m == 0 || spec.n == 0 {
        return Ok(());
    }
    if spec.k == 0 {
        if !spec.accumulate {
            out.iter_mut().for_each(|o| *o = F::zero());
        }
        return Ok(());
    }
    if spec.m <= SMALL_M && spec.transpose_b && !spec.transpose_a {
        // Decoding: a few rows against a weight matrix. gemm would repack the
        // whole weight every call; dot products over its rows read it once.
        rows_times_transposed(out, a, b, spec);
        return Ok(());
    }
    #[cfg(feature = "fast")]
    {
        gemm_product(out, a, b, spec, gemm::Parallelism::Rayon(0));
        Ok(())
    }
    #[cfg(not(feature = "fast"))]
    {
        ndarray_product(out, a, b, spec);
        Ok(())
    }
}

/// Rows of `a` up to which [`rows_times_transposed`] replaces the general
/// product.
const SMALL_M: usize = 16;

/// `out (=|+=) a · bᵀ` for a few rows `a` `[m, k]` and `b` `[n, k]`: one dot
/// product per output, `b` streamed once, across threads by output column
/// blocks with feature `fast`. Dots accumulate in 16 independent lanes.
fn rows_times_transposed<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], spec: MatmulSpec) {
    use super::par::chunks;
    #[allow(unused_imports)]
    use super::par::prelude::*;
    let (m, k, n) = (spec.m, spec.k, spec.n);
    const COLUMNS: usize = 64;
    let blocks: alloc::vec::Vec<alloc::vec::Vec<F>> = chunks!(b, COLUMNS * k)
        .map(|weights| {
            let columns = weights.len() / k;
            let mut block = alloc::vec![F::zero(); m * columns];
            for (j, w) in weights.chunks_exact(k).enumerate() {
                for i in 0..m {
                    block[i * columns + j] = dot(&a[i * k..][..k], w);
                }
            }
            block
        })
        .collect();
    for (index, block) in blocks.iter().enumerate() {
        let columns = block.len() / m.max(1);
        for i in 0..m {
            let target = &mut out[i * n + index * COLUMNS..][..columns];
            let source = &block[i * columns..][..columns];
            if spec.accumulate {
                target.iter_mut().zip(source).for_each(|(o, &v)| *o = *o + v);
            } else {
                target.copy_from_slice(source);
            }
        }
    }
}

/// `Σ x·y` in 16 lanes (vectorises), lanes summed in order.
fn dot<F: CpuFloat>(x: &[F], y: &[F]) -> F {
    let mut lanes = [F::zero(); 16];
    let (xs, ys) = (x.chunks_exact(16), y.chunks_exact(16));
    let (x_tail, y_tail) = (xs.remainder(), ys.remainder());
    for (cx, cy) in xs.zip(ys) {
        for lane in 0..16 {
            lanes[lane] = lanes[lane] + cx[lane] * cy[lane];
        }
    }
    let tail = x_tail.iter().zip(y_tail).fold(F::zero(), |acc, (&p, &q)| acc + p * q);
    lanes.iter().fold(F::zero(), |acc, &l| acc + l) + tail
}

/// The `gemm` crate's product (feature `fast`): about 350 GFLOP/s in f32 on
/// two Zen 5 cores against ndarray's 100 (FACTS.md).
///
/// Callers have checked `a`, `b` and `out` against `spec`.
#[cfg(feature = "fast")]
pub(crate) fn gemm_product<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], spec: MatmulSpec, threads: gemm::Parallelism) {
    let (a_row, a_col) = if spec.transpose_a { (1, spec.m) } else { (spec.k, 1) };
    let (b_row, b_col) = if spec.transpose_b { (1, spec.k) } else { (spec.n, 1) };
    // SAFETY: the lengths were checked against `spec`, so every element the
    // strides address (row < m or k, column < k or n) lies inside its slice;
    // `out` is borrowed mutably and so aliases neither input. gemm computes
    // dst = alpha·dst + beta·lhs·rhs (alpha and beta swapped from BLAS).
    unsafe {
        gemm::gemm(
            spec.m,
            spec.n,
            spec.k,
            out.as_mut_ptr(),
            1,
            spec.n as isize,
            spec.accumulate,
            a.as_ptr(),
            a_col as isize,
            a_row as isize,
            b.as_ptr(),
            b_col as isize,
            b_row as isize,
            F::one(),
            F::one(),
            false,
            false,
            false,
            threads,
        );
    }
}

/// ndarray's `general_mat_mul` (no_std, single-threaded).
#[cfg_attr(feature = "fast", allow(dead_code))]
fn ndarray_product<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], spec: MatmulSpec) {
    let a = view(a, spec.m, spec.k, spec.transpose_a);
    let b = view(b, spec.k, spec.n, spec.transpose_b);
    let mut c = ArrayViewMut2::from_shape((spec.m, spec.n), out).expect("length checked against the shape");
    let beta = if spec.accumulate { F::one() } else { F::zero() };
    ndarray::linalg::general_mat_mul(F::one(), &a, &b, beta, &mut c);
}

/// The same product by a plain triple loop with f64 accumulation: the
/// reference the fast paths are tested against.
///
/// ```
/// use sapo_core::backend::MatmulSpec;
/// use sapo_core::cpu::ops::matmul_reference;
/// let spec = MatmulSpec { m: 2, k: 1, n: 2, transpose_a: true, transpose_b: false, accumulate: false };
/// let mut out = [0.0_f32; 4];
/// matmul_reference(&mut out, &[1.0, 2.0], &[3.0, 4.0], spec)?;
/// assert_eq!(out, [3.0, 4.0, 6.0, 8.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// [`CpuError::LengthMismatch`].
pub fn matmul_reference<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], spec: MatmulSpec) -> Result<(), CpuError> {
    checked(out.len(), a.len(), b.len(), &spec)?;
    let a_at = |i: usize, p: usize| if spec.transpose_a { a[p * spec.m + i] } else { a[i * spec.k + p] };
    let b_at = |p: usize, j: usize| if spec.transpose_b { b[j * spec.k + p] } else { b[p * spec.n + j] };
    for i in 0..spec.m {
        for j in 0..spec.n {
            let mut total = if spec.accumulate { out[i * spec.n + j].widen() } else { 0.0 };
            for p in 0..spec.k {
                total += a_at(i, p).widen() * b_at(p, j).widen();
            }
            out[i * spec.n + j] = F::from_f64(total);
        }
    }
    Ok(())
}

/// `out[r, c] += bias[c]`.
///
/// # Errors
/// [`CpuError::LengthMismatch`].
pub fn add_bias<F: CpuFloat>(out: &mut [F], bias: &[F], rows: usize, cols: usize) -> Result<(), CpuError> {
    check_len("add_bias", "out", out.len(), rows * cols)?;
    check_len("add_bias", "bias", bias.len(), cols)?;
    for row in out.chunks_exact_mut(cols.max(1)) {
        row.iter_mut().zip(bias).for_each(|(o, &b)| *o = *o + b);
    }
    Ok(())
}

/// `dbias[c] += Σ_r dout[r, c]`, accumulated in f64.
///
/// # Errors
/// [`CpuError::LengthMismatch`].
pub fn add_bias_backward<F: CpuFloat>(dbias: &mut [F], dout: &[F], rows: usize, cols: usize) -> Result<(), CpuError> {
    check_len("add_bias_backward", "dout", dout.len(), rows * cols)?;
    check_len("add_bias_backward", "dbias", dbias.len(), cols)?;
    for (c, db) in dbias.iter_mut().enumerate() {
        let total: f64 = (0..rows).map(|r| dout[r * cols + c].widen()).sum();
        *db = F::from_f64(db.widen() + total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{assert_close, random_vec};

    #[test]
    fn fast_and_ndarray_paths_match_the_triple_loop_for_every_transpose_and_odd_shapes() {
        for (seed, (m, k, n)) in [(1, (7, 13, 5)), (2, (33, 1, 17)), (3, (1, 65, 3)), (4, (3, 200, 130))].into_iter() {
            for transpose_a in [false, true] {
                for transpose_b in [false, true] {
                    for accumulate in [false, true] {
                        let spec = MatmulSpec { m, k, n, transpose_a, transpose_b, accumulate };
                        let a = random_vec::<f32>(seed, m * k);
                        let b = random_vec::<f32>(seed + 10, k * n);
                        let start = random_vec::<f32>(seed + 20, m * n);
                        let (mut fast, mut reference) = (start.clone(), start);
                        let mut plain = fast.clone();
                        matmul(&mut fast, &a, &b, spec).expect("shapes match");
                        matmul_reference(&mut reference, &a, &b, spec).expect("shapes match");
                        ndarray_product(&mut plain, &a, &b, spec);
                        assert_close(&fast, &reference, 1e-6, "matmul");
                        assert_close(&plain, &reference, 1e-6, "ndarray matmul");
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let spec = MatmulSpec { m: 2, k: 3, n: 4, transpose_a: false, transpose_b: false, accumulate: false };
        let error = matmul(&mut [0.0_f32; 8], &[0.0; 5], &[0.0; 12], spec).expect_err("a too short");
        assert_eq!(error, CpuError::LengthMismatch { op: "matmul", buffer: "a", expected: 6, got: 5 });
    }
}
