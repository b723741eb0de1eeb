//! The embedding lookup and its backward (`kernels/embedding.cu`), as in
//! sapo-core's `cpu/embedding.rs`.

use cudarc::driver::LaunchConfig;

use super::memory::{download, write};
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, Scratch, elementwise};
use crate::error::{CudaError, Result, check_at_least, dim};

/// `out[t, :] = table[ids[t], :]`; an id outside the table writes NaN.
pub(crate) fn embedding_forward(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    ids: &CudaBuf<u32>,
    table: &CudaBuf<f32>,
    n_tokens: usize,
    channels: usize,
) -> Result {
    const OP: &str = "embedding_forward";
    check_at_least(OP, "out", out.len, n_tokens * channels)?;
    check_at_least(OP, "ids", ids.len, n_tokens)?;
    if n_tokens * channels == 0 {
        return Ok(());
    }
    let vocab = dim(OP, "vocab", table.len / channels)?;
    let (t, c) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "channels", channels)?);
    backend.launch(&backend.kernels().embedding_forward, elementwise(n_tokens * channels), |args| {
        args.buf_mut(out).buf(ids).buf(table).value(&t).value(&c).value(&vocab);
    })
}

/// `dtable[ids[t], :] += dout[t, :]`, each table row summed in token order.
pub(crate) fn embedding_backward(
    backend: &CudaBackend,
    dtable: &mut CudaBuf<f32>,
    ids: &CudaBuf<u32>,
    dout: &CudaBuf<f32>,
    n_tokens: usize,
    channels: usize,
) -> Result {
    const OP: &str = "embedding_backward";
    check_at_least(OP, "dout", dout.len, n_tokens * channels)?;
    check_at_least(OP, "ids", ids.len, n_tokens)?;
    if n_tokens * channels == 0 {
        return Ok(());
    }
    let vocab = dtable.len / channels;
    // Group the tokens by id on the host (one small download) so each
    // table row is summed by one block in token order: no float
    // atomics, so the gradient is the same bits on every run.
    let mut ids_host = download(backend, ids)?;
    ids_host.truncate(n_tokens);
    if let Some(&id) = ids_host.iter().find(|&&id| id as usize >= vocab) {
        return Err(CudaError::InvalidDims { op: OP, reason: format!("token id {id} is not below {vocab}") });
    }
    let mut order: Vec<u32> = (0..n_tokens as u32).collect();
    order.sort_by_key(|&token| ids_host[token as usize]);
    let (mut unique, mut offsets) = (Vec::new(), Vec::new());
    for (position, &token) in order.iter().enumerate() {
        let id = ids_host[token as usize];
        if unique.last() != Some(&id) {
            unique.push(id);
            offsets.push(position as u32);
        }
    }
    offsets.push(n_tokens as u32);
    let mut scratch = backend.scratch()?;
    let Scratch { group_ids, group_offsets, group_tokens, .. } = &mut *scratch;
    let group_ids = backend.grow(group_ids, unique.len())?;
    let group_offsets = backend.grow(group_offsets, offsets.len())?;
    let group_tokens = backend.grow(group_tokens, order.len())?;
    write(backend, group_ids, &unique)?;
    write(backend, group_offsets, &offsets)?;
    write(backend, group_tokens, &order)?;
    let (n_unique, c) = (dim(OP, "distinct ids", unique.len())?, dim(OP, "channels", channels)?);
    let config = LaunchConfig { grid_dim: (n_unique, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let (group_ids, group_offsets, group_tokens) = (&*group_ids, &*group_offsets, &*group_tokens);
    backend.launch(&backend.kernels().embedding_backward_grouped, config, |args| {
        args.buf_mut(dtable).buf(dout).buf(group_ids).buf(group_offsets).buf(group_tokens);
        args.value(&n_unique).value(&c);
    })
}
