//! Elementwise sums and SwiGLU (`kernels/elementwise.cu`), as in sapo-core's
//! `cpu/elementwise.rs`.

use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise};
use crate::error::{Result, check_at_least};

/// `out = silu(gate) ⊙ up` for the first `n` elements.
pub(crate) fn swiglu_forward(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    gate: &CudaBuf<f32>,
    up: &CudaBuf<f32>,
    n: usize,
) -> Result {
    const OP: &str = "swiglu_forward";
    for (name, len) in [("out", out.len), ("gate", gate.len), ("up", up.len)] {
        check_at_least(OP, name, len, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().swiglu_forward, elementwise(n), |args| {
        args.buf_mut(out).buf(gate).buf(up).value(&n64);
    })
}

/// `dgate += dout ⊙ up ⊙ silu'(gate)`, `dup += dout ⊙ silu(gate)`.
pub(crate) fn swiglu_backward(
    backend: &CudaBackend,
    dgate: &mut CudaBuf<f32>,
    dup: &mut CudaBuf<f32>,
    dout: &CudaBuf<f32>,
    gate: &CudaBuf<f32>,
    up: &CudaBuf<f32>,
    n: usize,
) -> Result {
    const OP: &str = "swiglu_backward";
    for (name, len) in [("dgate", dgate.len), ("dup", dup.len), ("dout", dout.len), ("gate", gate.len), ("up", up.len)]
    {
        check_at_least(OP, name, len, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().swiglu_backward, elementwise(n), |args| {
        args.buf_mut(dgate).buf_mut(dup).buf(dout).buf(gate).buf(up).value(&n64);
    })
}

/// `out = a + b` for the first `n` elements.
pub(crate) fn add(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<f32>,
    b: &CudaBuf<f32>,
    n: usize,
) -> Result {
    const OP: &str = "add";
    for (name, len) in [("out", out.len), ("a", a.len), ("b", b.len)] {
        check_at_least(OP, name, len, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().add, elementwise(n), |args| {
        args.buf_mut(out).buf(a).buf(b).value(&n64);
    })
}

/// `acc += x` for the first `n` elements.
pub(crate) fn add_assign(backend: &CudaBackend, acc: &mut CudaBuf<f32>, x: &CudaBuf<f32>, n: usize) -> Result {
    const OP: &str = "add_assign";
    check_at_least(OP, "acc", acc.len, n)?;
    check_at_least(OP, "x", x.len, n)?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().add_assign, elementwise(n), |args| {
        args.buf_mut(acc).buf(x).value(&n64);
    })
}
