//! The optimizer phase (`kernels/optim.cu`): the AdamW and RMSprop updates,
//! the EMA of the weights, and gradient clipping's sum of squares and
//! scaling, over whole parameter-shaped buffers. The CPU reference
//! implements these in `cpu/mod.rs` over sapo-core's `optim/` and `ema.rs`,
//! whose scalars (`AdamWStep`, `RmspropStep`) the kernels take, so the
//! updates are the CPU's bit for bit.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use sapo_core::ema::EmaError;
use sapo_core::optim::{AdamWParams, AdamWStep, RmspropParams, RmspropStep};

use crate::buffer::CudaBuf;
use crate::device::{BLOCK, CudaBackend, elementwise};
use crate::error::{CudaError, Result, check_exact};

/// One AdamW step (PyTorch's, decoupled weight decay) on every element.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw_step(
    backend: &CudaBackend,
    params: &mut CudaBuf<f32>,
    grads: &CudaBuf<f32>,
    exp_avg: &mut CudaBuf<f32>,
    exp_avg_sq: &mut CudaBuf<f32>,
    step: u64,
    lr: f64,
    hp: &AdamWParams,
) -> Result {
    const OP: &str = "adamw_step";
    let n = params.len;
    check_exact(OP, "grads", grads.len, n)?;
    check_exact(OP, "exp_avg", exp_avg.len, n)?;
    check_exact(OP, "exp_avg_sq", exp_avg_sq.len, n)?;
    let s = AdamWStep::new(step, lr, hp)?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().adamw_step, elementwise(n), |args| {
        args.buf_mut(params).buf(grads).buf_mut(exp_avg).buf_mut(exp_avg_sq);
        args.value(&s.weight_decay_factor).value(&s.one_minus_beta1).value(&s.beta2).value(&s.one_minus_beta2);
        args.value(&s.bias_correction2_sqrt).value(&s.eps).value(&s.neg_step_size).value(&n64);
    })
}

/// One RMSprop step (PyTorch's) on every element, without momentum or
/// centring (which need state this operation does not hold, as on the CPU).
pub(crate) fn rmsprop_step(
    backend: &CudaBackend,
    params: &mut CudaBuf<f32>,
    grads: &CudaBuf<f32>,
    square_avg: &mut CudaBuf<f32>,
    lr: f64,
    hp: &RmspropParams,
) -> Result {
    const OP: &str = "rmsprop_step";
    let n = params.len;
    check_exact(OP, "grads", grads.len, n)?;
    check_exact(OP, "square_avg", square_avg.len, n)?;
    let s = RmspropStep::new(lr, hp)?;
    if hp.momentum != 0.0 || hp.centered {
        return Err(CudaError::InvalidDims {
            op: OP,
            reason: "momentum and centring need state this operation does not hold (as on the CPU)".into(),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().rmsprop_step, elementwise(n), |args| {
        args.buf_mut(params).buf(grads).buf_mut(square_avg);
        args.value(&s.weight_decay).value(&s.alpha).value(&s.one_minus_alpha).value(&s.eps).value(&s.neg_lr);
        args.value(&n64);
    })
}

/// `ema = decay·ema + (1 − decay)·params`, `decay` in `[0, 1]`.
pub(crate) fn ema_update(backend: &CudaBackend, ema: &mut CudaBuf<f32>, params: &CudaBuf<f32>, decay: f64) -> Result {
    if !(0.0..=1.0).contains(&decay) {
        return Err(EmaError::InvalidDecay(decay).into());
    }
    check_exact("ema_update", "params", params.len, ema.len)?;
    if ema.len == 0 {
        return Ok(());
    }
    // The CPU reference's f32 scalars: decay rounded, then 1 − decay in f32.
    let decay = decay as f32;
    let keep = 1.0 - decay;
    let n64 = ema.len as u64;
    backend.launch(&backend.kernels().ema_update, elementwise(ema.len), |args| {
        args.buf_mut(ema).buf(params).value(&decay).value(&keep).value(&n64);
    })
}

/// `Σ x²` in f64, the same bits on every run.
pub(crate) fn sum_of_squares(backend: &CudaBackend, x: &CudaBuf<f32>) -> Result<f64> {
    if x.len == 0 {
        return Ok(0.0);
    }
    // Per-block partial sums, added on the host in block order: the same
    // bits on every run (an atomic total would depend on block timing).
    let blocks = x.len.div_ceil(BLOCK as usize).clamp(1, 1024);
    let stream = backend.stream();
    let mut scratch = backend.scratch()?;
    if scratch.sum_of_squares.is_none() {
        scratch.sum_of_squares = Some(stream.alloc_zeros::<f64>(1024)?);
    }
    let partials = scratch.sum_of_squares.as_mut().expect("just filled");
    let n64 = x.len as u64;
    let config = LaunchConfig { grid_dim: (blocks as u32, 1, 1), ..elementwise(1) };
    let mut builder = stream.launch_builder(&backend.kernels().sum_of_squares_partials);
    builder.arg(&mut *partials).arg(&x.bytes).arg(&n64);
    // SAFETY: the kernel reads `x.len` floats and writes `blocks` ≤ 1024 f64.
    unsafe { builder.launch(config) }?;
    let values = stream.clone_dtoh(&partials.slice(..blocks))?;
    stream.synchronize()?;
    Ok(values.iter().sum())
}

/// `x *= factor` on every element.
pub(crate) fn scale(backend: &CudaBackend, x: &mut CudaBuf<f32>, factor: f32) -> Result {
    if x.len == 0 {
        return Ok(());
    }
    let n64 = x.len as u64;
    backend.launch(&backend.kernels().scale, elementwise(x.len), |args| {
        args.buf_mut(x).value(&factor).value(&n64);
    })
}
