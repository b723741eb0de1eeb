//! The key/value cache of generation: writing new rows, and attention of
//! new queries over the cached rows of their own slot.

use super::error::{CpuError, check_index, check_len};
use super::float::CpuFloat;
use super::par::chunks_mut;
#[allow(unused_imports)]
use super::par::prelude::*;
use crate::backend::HeadDims;

/// Copies row `t` of `new` `[T, W]` into `cache[slots[t], positions[t], :]`.
///
/// ```
/// use sapo_core::cpu::ops::kv_cache_write;
/// let mut cache = [0.0_f32; 2 * 3 * 2]; // 2 slots, 3 positions, width 2
/// kv_cache_write(&mut cache, &[7.0, 8.0], &[1], &[2], 3, 2)?;
/// assert_eq!(&cache[10..12], &[7.0, 8.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch, a slot beyond the cache or a position ≥ `max_len`.
pub fn kv_cache_write<F: CpuFloat>(
    cache: &mut [F],
    new: &[F],
    slots: &[u32],
    positions: &[u32],
    max_len: usize,
    width: usize,
) -> Result<(), CpuError> {
    const OP: &str = "kv_cache_write";
    check_len(OP, "new", new.len(), slots.len() * width)?;
    check_len(OP, "positions", positions.len(), slots.len())?;
    let n_slots = cache.len().checked_div(max_len * width).unwrap_or(0);
    for (t, (&slot, &position)) in slots.iter().zip(positions).enumerate() {
        check_index(OP, "slot", slot as usize, n_slots)?;
        check_index(OP, "position", position as usize, max_len)?;
        let row = (slot as usize * max_len + position as usize) * width;
        cache[row..row + width].copy_from_slice(&new[t * width..][..width]);
    }
    Ok(())
}

/// Each query token attends over its slot's cached positions `0..=position`.
///
/// # Errors
/// A length mismatch, a slot beyond the cache or a position ≥ `max_len`.
#[allow(clippy::too_many_arguments)]
pub fn attention_cached<F: CpuFloat>(
    out: &mut [F],
    q: &[F],
    k_cache: &[F],
    v_cache: &[F],
    slots: &[u32],
    positions: &[u32],
    max_len: usize,
    heads: HeadDims,
) -> Result<(), CpuError> {
    const OP: &str = "attention_cached";
    let HeadDims { n_heads, n_kv_heads, head_dim: d } = heads;
    if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
        return Err(CpuError::InvalidDims {
            op: OP,
            reason: "query heads must be a positive multiple of key/value heads",
        });
    }
    let n = slots.len();
    check_len(OP, "q", q.len(), n * n_heads * d)?;
    check_len(OP, "out", out.len(), n * n_heads * d)?;
    check_len(OP, "positions", positions.len(), n)?;
    check_len(OP, "v_cache", v_cache.len(), k_cache.len())?;
    let row_width = n_kv_heads * d;
    let n_slots = k_cache.len().checked_div(max_len * row_width).unwrap_or(0);
    check_len(OP, "k_cache", k_cache.len(), n_slots * max_len * row_width)?;
    for (&slot, &position) in slots.iter().zip(positions) {
        check_index(OP, "slot", slot as usize, n_slots)?;
        check_index(OP, "position", position as usize, max_len)?;
    }
    let group = n_heads / n_kv_heads;
    let scale = F::from_f64(1.0 / libm::sqrt(d as f64));
    chunks_mut!(out, (n_heads * d).max(1)).enumerate().for_each(|(t, token_out)| {
        let (slot, position) = (slots[t] as usize, positions[t] as usize);
        let base = slot * max_len * row_width;
        let mut scores = alloc::vec![F::zero(); position + 1];
        for (h, head_out) in token_out.chunks_exact_mut(d).enumerate() {
            let kv = h / group;
            let query = &q[(t * n_heads + h) * d..][..d];
            for (u, score) in scores.iter_mut().enumerate() {
                let key = &k_cache[base + u * row_width + kv * d..][..d];
                *score = query.iter().zip(key).fold(F::zero(), |acc, (&a, &b)| acc + a * b) * scale;
            }
            let max = scores.iter().copied().fold(F::neg_infinity(), F::max);
            let log_sum = max + F::from_f64(libm::log(F::sum_exp_shifted(&scores, max)));
            head_out.iter_mut().for_each(|o| *o = F::zero());
            for (u, &score) in scores.iter().enumerate() {
                let p = (score - log_sum).fast_exp();
                let value = &v_cache[base + u * row_width + kv * d..][..d];
                head_out.iter_mut().zip(value).for_each(|(o, &v)| *o = *o + p * v);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::attention_forward_reference;
    use crate::cpu::test_support::{assert_close, random_vec};
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn cached_attention_equals_causal_attention_over_the_same_sequence() {
        let heads = HeadDims { n_heads: 4, n_kv_heads: 2, head_dim: 3 };
        let (len, max_len, width) = (7, 9, 6);
        let q = random_vec::<f64>(1, len * 12);
        let (k, v) = (random_vec::<f64>(2, len * width), random_vec::<f64>(3, len * width));
        let (mut expected, mut lse) = (vec![0.0; len * 12], vec![0.0; len * 4]);
        attention_forward_reference(&mut expected, &mut lse, &q, &k, &v, &[0, len as u32], len, heads).expect("valid");
        // The sequence lives in cache slot 1 of 2.
        let (mut k_cache, mut v_cache) = (vec![0.0; 2 * max_len * width], vec![0.0; 2 * max_len * width]);
        let slots = vec![1u32; len];
        let positions: Vec<u32> = (0..len as u32).collect();
        kv_cache_write(&mut k_cache, &k, &slots, &positions, max_len, width).expect("valid");
        kv_cache_write(&mut v_cache, &v, &slots, &positions, max_len, width).expect("valid");
        let mut out = vec![0.0; len * 12];
        attention_cached(&mut out, &q, &k_cache, &v_cache, &slots, &positions, max_len, heads).expect("valid");
        assert_close(&out, &expected, 1e-13, "cached attention");
    }

    #[test]
    fn out_of_range_slot_or_position_is_an_error() {
        let mut cache = [0.0_f32; 12];
        assert!(kv_cache_write(&mut cache, &[1.0, 2.0], &[2], &[0], 3, 2).is_err());
        assert!(kv_cache_write(&mut cache, &[1.0, 2.0], &[0], &[3], 3, 2).is_err());
    }
}
