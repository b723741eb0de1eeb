//! The optimizer updates, the EMA and the reductions on both backends.

use anyhow::Result;
use sapo_core::backend::Backend;
use sapo_core::optim::{AdamWParams, RmspropParams};

use super::super::{Check, on, scalar_error};
use super::{Harness, OpShapes};

pub(super) fn optimizers<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let n = s.channels * s.intermediate;
    let shape = format!("n={n}");
    let grads = h.random(n, 1e-2)?;
    let mut params = h.random(n, 0.02)?;
    let (mut m, mut v) = (h.random(n, 1e-3)?, h.random(n, 1.0)?);
    // Second moments are non-negative.
    let squares: Vec<f32> = v.initial.iter().map(|x| x * x * 1e-4).collect();
    v = h.upload(squares)?;
    let hp = AdamWParams { weight_decay: 0.01, ..AdamWParams::default() };
    on("reference", h.b.reference.adamw_step(&mut params.r, &grads.r, &mut m.r, &mut v.r, 3, 1e-3, &hp))?;
    on("candidate", h.b.candidate.adamw_step(&mut params.c, &grads.c, &mut m.c, &mut v.c, 3, 1e-3, &hp))?;
    h.record("adamw_step (update)", shape.clone(), &params, n, true)?;
    h.record("adamw_step (exp_avg_sq)", shape.clone(), &v, n, false)?;

    let mut params = h.random(n, 0.02)?;
    let squares: Vec<f32> = (0..n).map(|_| (1e-4 * h.rng.standard_normal().abs()) as f32).collect();
    let mut square_avg = h.upload(squares)?;
    let hp = RmspropParams { weight_decay: 0.01, ..RmspropParams::default() };
    on("reference", h.b.reference.rmsprop_step(&mut params.r, &grads.r, &mut square_avg.r, 1e-4, &hp))?;
    on("candidate", h.b.candidate.rmsprop_step(&mut params.c, &grads.c, &mut square_avg.c, 1e-4, &hp))?;
    h.record("rmsprop_step (update)", shape.clone(), &params, n, true)?;

    let mut ema = h.random(n, 0.02)?;
    let weights = h.random(n, 0.02)?;
    on("reference", h.b.reference.ema_update(&mut ema.r, &weights.r, 0.99))?;
    on("candidate", h.b.candidate.ema_update(&mut ema.c, &weights.c, 0.99))?;
    h.record("ema_update", format!("{shape} decay=0.99"), &ema, n, true)?;

    let reference = on("reference", h.b.reference.sum_of_squares(&grads.r))?;
    let candidate = on("candidate", h.b.candidate.sum_of_squares(&grads.c))?;
    let rel_error = scalar_error(reference, candidate);
    h.checks.push(Check {
        op: "sum_of_squares".into(),
        shape: shape.clone(),
        dtype: "f64",
        rel_error,
        tolerance: 1e-12,
    });

    let mut x = h.random(n, 1.0)?;
    on("reference", h.b.reference.scale(&mut x.r, 0.37))?;
    on("candidate", h.b.candidate.scale(&mut x.c, 0.37))?;
    h.record("scale", shape, &x, n, false)
}
