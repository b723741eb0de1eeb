//! Attention on both backends: forward and backward (reference loops and
//! blocked kernels), and the key/value cache.

use anyhow::Result;
use sapo_core::backend::{Backend, Packing};

use super::super::on;
use super::{Harness, OpShapes};

pub(super) fn attention<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let heads = s.heads;
    let t = s.tokens();
    let (q_len, kv_len) = (t * heads.n_heads * heads.head_dim, t * heads.n_kv_heads * heads.head_dim);
    let shape =
        format!("T={t} seqs={:?} H={} KVH={} D={}", s.seq_lens, heads.n_heads, heads.n_kv_heads, heads.head_dim);
    let seq_starts = h.upload(Packing::from_lengths(&s.seq_lens).seq_starts)?;
    let (q, k, v) = (h.random(q_len, 1.0)?, h.random(kv_len, 1.0)?, h.random(kv_len, 1.0)?);
    let (mut out, mut lse) = (h.poisoned(q_len)?, h.poisoned(t * heads.n_heads)?);
    on(
        "reference",
        h.b.reference.attention_forward(&mut out.r, &mut lse.r, &q.r, &k.r, &v.r, &seq_starts.r, t, heads),
    )?;
    on(
        "candidate",
        h.b.candidate.attention_forward(&mut out.c, &mut lse.c, &q.c, &k.c, &v.c, &seq_starts.c, t, heads),
    )?;
    h.record("attention_forward", shape.clone(), &out, q_len, false)?;
    h.record("attention_forward (lse)", shape.clone(), &lse, t * heads.n_heads, false)?;
    let dout = h.random(q_len, 1.0)?;
    let (mut dq, mut dk, mut dv) = (h.random(q_len, 1.0)?, h.random(kv_len, 1.0)?, h.random(kv_len, 1.0)?);
    on(
        "reference",
        h.b.reference.attention_backward(
            &mut dq.r,
            &mut dk.r,
            &mut dv.r,
            &dout.r,
            &q.r,
            &k.r,
            &v.r,
            &out.r,
            &lse.r,
            &seq_starts.r,
            t,
            heads,
        ),
    )?;
    on(
        "candidate",
        h.b.candidate.attention_backward(
            &mut dq.c,
            &mut dk.c,
            &mut dv.c,
            &dout.c,
            &q.c,
            &k.c,
            &v.c,
            &out.c,
            &lse.c,
            &seq_starts.c,
            t,
            heads,
        ),
    )?;
    h.record("attention_backward (dq)", shape.clone(), &dq, q_len, true)?;
    h.record("attention_backward (dk)", shape.clone(), &dk, kv_len, true)?;
    h.record("attention_backward (dv)", shape, &dv, kv_len, true)?;

    // The cache: every slot prefilled to a different length, then one
    // decode token per slot attending over it.
    let (slots, max_len) = (s.cache_slots, s.cache_max_len);
    let kv_dim = heads.n_kv_heads * heads.head_dim;
    let cache_len = slots * max_len * kv_dim;
    let (mut k_cache, mut v_cache) = (h.random(cache_len, 1.0)?, h.random(cache_len, 1.0)?);
    let fill: Vec<usize> = (0..slots).map(|slot| max_len / 2 + slot * (max_len / 2 - 1) / slots.max(1)).collect();
    let (mut slot_ids, mut positions) = (Vec::new(), Vec::new());
    for (slot, &length) in fill.iter().enumerate() {
        for position in 0..length {
            slot_ids.push(slot as u32);
            positions.push(position as u32);
        }
    }
    let n_new = slot_ids.len();
    let (new_k, new_v) = (h.random(n_new * kv_dim, 1.0)?, h.random(n_new * kv_dim, 1.0)?);
    let (slot_buf, position_buf) = (h.upload(slot_ids)?, h.upload(positions)?);
    let cache_shape = format!("slots={slots} max_len={max_len} KVH·D={kv_dim} tokens={n_new}");
    for (cache, new) in [(&mut k_cache, &new_k), (&mut v_cache, &new_v)] {
        on(
            "reference",
            h.b.reference.kv_cache_write(&mut cache.r, &new.r, &slot_buf.r, &position_buf.r, n_new, max_len, kv_dim),
        )?;
        on(
            "candidate",
            h.b.candidate.kv_cache_write(&mut cache.c, &new.c, &slot_buf.c, &position_buf.c, n_new, max_len, kv_dim),
        )?;
    }
    h.record("kv_cache_write", cache_shape.clone(), &k_cache, cache_len, false)?;
    let decode_slots: Vec<u32> = (0..slots as u32).collect();
    let decode_positions: Vec<u32> = fill.iter().map(|&length| length as u32 - 1).collect();
    let (decode_slots, decode_positions) = (h.upload(decode_slots)?, h.upload(decode_positions)?);
    let q_len = slots * heads.n_heads * heads.head_dim;
    let q = h.random(q_len, 1.0)?;
    let mut out = h.poisoned(q_len)?;
    on(
        "reference",
        h.b.reference.attention_cached(
            &mut out.r,
            &q.r,
            &k_cache.r,
            &v_cache.r,
            &decode_slots.r,
            &decode_positions.r,
            slots,
            max_len,
            heads,
        ),
    )?;
    on(
        "candidate",
        h.b.candidate.attention_cached(
            &mut out.c,
            &q.c,
            &k_cache.c,
            &v_cache.c,
            &decode_slots.c,
            &decode_positions.c,
            slots,
            max_len,
            heads,
        ),
    )?;
    h.record("attention_cached", format!("{cache_shape} H={}", heads.n_heads), &out, q_len, false)
}
