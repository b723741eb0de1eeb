//! Per-sequence sums and means of row log-probabilities: the link between
//! token log-probs and the objectives' per-sequence inputs.

use super::error::{CpuError, check_index, check_len};
use super::float::CpuFloat;

fn counts(op: &'static str, row_seqs: &[u32], n_seqs: usize) -> Result<alloc::vec::Vec<f64>, CpuError> {
    let mut counts = alloc::vec![0.0; n_seqs];
    for &seq in row_seqs {
        check_index(op, "sequence", seq as usize, n_seqs)?;
        counts[seq as usize] += 1.0;
    }
    Ok(counts)
}

/// `sums[s] = Σ_{row_seqs[r] = s} logps[r]`, `means[s] = sums[s]/count_s`
/// (0 when the sequence has no rows), accumulated in f64.
///
/// ```
/// use sapo_core::cpu::ops::sequence_logprobs;
/// let (mut sums, mut means) = ([0.0_f32; 2], [0.0; 2]);
/// sequence_logprobs(&mut sums, &mut means, &[-1.0, -2.0, -4.0], &[0, 0, 1])?;
/// assert_eq!((sums, means), ([-3.0, -4.0], [-1.5, -4.0]));
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch or a sequence index ≥ S.
pub fn sequence_logprobs<F: CpuFloat>(
    sums: &mut [F],
    means: &mut [F],
    logps: &[F],
    row_seqs: &[u32],
) -> Result<(), CpuError> {
    const OP: &str = "sequence_logprobs";
    check_len(OP, "means", means.len(), sums.len())?;
    check_len(OP, "row_seqs", row_seqs.len(), logps.len())?;
    let counts = counts(OP, row_seqs, sums.len())?;
    let mut totals = alloc::vec![0.0; sums.len()];
    for (&logp, &seq) in logps.iter().zip(row_seqs) {
        totals[seq as usize] += logp.widen();
    }
    for s in 0..sums.len() {
        sums[s] = F::from_f64(totals[s]);
        means[s] = F::from_f64(if counts[s] > 0.0 { totals[s] / counts[s] } else { 0.0 });
    }
    Ok(())
}

/// `dlogps[r] += dsums[s] + dmeans[s]/count_s`, `s = row_seqs[r]`.
///
/// # Errors
/// A length mismatch or a sequence index ≥ S.
pub fn sequence_logprobs_backward<F: CpuFloat>(
    dlogps: &mut [F],
    dsums: &[F],
    dmeans: &[F],
    row_seqs: &[u32],
) -> Result<(), CpuError> {
    const OP: &str = "sequence_logprobs_backward";
    check_len(OP, "dmeans", dmeans.len(), dsums.len())?;
    check_len(OP, "row_seqs", row_seqs.len(), dlogps.len())?;
    let counts = counts(OP, row_seqs, dsums.len())?;
    for (d, &seq) in dlogps.iter_mut().zip(row_seqs) {
        let s = seq as usize;
        *d = F::from_f64(d.widen() + dsums[s].widen() + dmeans[s].widen() / counts[s]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    #[test]
    fn backward_matches_finite_differences() {
        let row_seqs = [2u32, 0, 0, 2, 1, 2, 0];
        let logps = random_vec::<f64>(1, row_seqs.len());
        let (dsums, dmeans) = (random_vec::<f64>(2, 3), random_vec::<f64>(3, 3));
        let mut dlogps = vec![0.0; logps.len()];
        sequence_logprobs_backward(&mut dlogps, &dsums, &dmeans, &row_seqs).expect("valid");
        check_gradients("sequence_logprobs", &logps, &dlogps, 1e-6, |x| {
            let (mut sums, mut means) = (vec![0.0; 3], vec![0.0; 3]);
            sequence_logprobs(&mut sums, &mut means, x, &row_seqs).expect("valid");
            (0..3).map(|s| sums[s] * dsums[s] + means[s] * dmeans[s]).sum()
        });
    }
}
