//! Token embedding lookup and its scatter-add backward.

use super::error::{CpuError, check_index, check_len};
use super::float::CpuFloat;

/// `out[t, :] = table[ids[t], :]`; `out` `[T, C]`, `table` `[V, C]`.
///
/// ```
/// use sapo_core::cpu::ops::embedding_forward;
/// let table = [0.0_f32, 1.0, 10.0, 11.0]; // V = 2, C = 2
/// let mut out = [0.0; 4];
/// embedding_forward(&mut out, &[1, 0], &table, 2)?;
/// assert_eq!(out, [10.0, 11.0, 0.0, 1.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch or a token id ≥ V.
pub fn embedding_forward<F: CpuFloat>(
    out: &mut [F],
    ids: &[u32],
    table: &[F],
    channels: usize,
) -> Result<(), CpuError> {
    const OP: &str = "embedding_forward";
    check_len(OP, "out", out.len(), ids.len() * channels)?;
    let vocab = table.len().checked_div(channels).unwrap_or(0);
    check_len(OP, "table", table.len(), vocab * channels)?;
    for (row, &id) in out.chunks_exact_mut(channels.max(1)).zip(ids) {
        check_index(OP, "token id", id as usize, vocab)?;
        let start = id as usize * channels;
        row.copy_from_slice(&table[start..start + channels]);
    }
    Ok(())
}

/// `dtable[ids[t], :] += dout[t, :]`.
///
/// # Errors
/// A length mismatch or a token id ≥ V.
pub fn embedding_backward<F: CpuFloat>(
    dtable: &mut [F],
    ids: &[u32],
    dout: &[F],
    channels: usize,
) -> Result<(), CpuError> {
    const OP: &str = "embedding_backward";
    check_len(OP, "dout", dout.len(), ids.len() * channels)?;
    let vocab = dtable.len().checked_div(channels).unwrap_or(0);
    check_len(OP, "dtable", dtable.len(), vocab * channels)?;
    for (row, &id) in dout.chunks_exact(channels.max(1)).zip(ids) {
        check_index(OP, "token id", id as usize, vocab)?;
        let start = id as usize * channels;
        dtable[start..start + channels].iter_mut().zip(row).for_each(|(d, &g)| *d = *d + g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    #[test]
    fn backward_matches_finite_differences_with_repeated_ids() {
        let (vocab, channels) = (7, 5);
        let ids = [3u32, 0, 3, 6, 1, 3];
        let table = random_vec::<f64>(1, vocab * channels);
        let dout = random_vec::<f64>(2, ids.len() * channels);
        let mut dtable = vec![0.0; table.len()];
        embedding_backward(&mut dtable, &ids, &dout, channels).expect("valid");
        check_gradients("embedding", &table, &dtable, 1e-6, |t| {
            let mut out = vec![0.0; ids.len() * channels];
            embedding_forward(&mut out, &ids, t, channels).expect("valid");
            out.iter().zip(&dout).map(|(o, w)| o * w).sum()
        });
    }

    #[test]
    fn out_of_range_id_is_an_error() {
        let error = embedding_forward(&mut [0.0_f32; 2], &[5], &[0.0; 4], 2).expect_err("id 5 ≥ V = 2");
        assert!(matches!(error, CpuError::IndexOutOfRange { index: 5, bound: 2, .. }));
    }
}
