//! Every `Backend` operation on fresh random inputs, reference against
//! candidate.

use anyhow::Result;
use half::bf16;
use sapo_core::backend::{Backend, Element, HeadDims, MatmulSpec, Packing};
use sapo_core::rng::SapoRng;

use super::{Backends, Check, F32_OP_TOLERANCE, on, relative_error};

mod attention;
mod logprob;
mod optim;

use attention::attention;
use logprob::logprobs;
use optim::optimizers;

/// The dimensions the operations run at.
#[derive(Debug, Clone, PartialEq)]
pub struct OpShapes {
    /// Lengths of the packed sequences (`T` is their sum).
    pub seq_lens: Vec<usize>,
    /// `C`.
    pub channels: usize,
    /// `H`, `KVH`, `D`.
    pub heads: HeadDims,
    /// `I`, the MLP width.
    pub intermediate: usize,
    /// `V`.
    pub vocab: usize,
    /// `R`, rows whose log-probs are taken.
    pub rows: usize,
    /// Key/value cache slots.
    pub cache_slots: usize,
    /// Positions per cache slot.
    pub cache_max_len: usize,
}

impl OpShapes {
    /// SmolLM2-135M's layer shapes, 512 tokens in four sequences: what a
    /// training step on that model runs.
    pub fn smollm2() -> Self {
        OpShapes {
            seq_lens: vec![200, 150, 100, 62],
            channels: 576,
            heads: HeadDims { n_heads: 9, n_kv_heads: 3, head_dim: 64 },
            intermediate: 1536,
            vocab: 49_152,
            rows: 256,
            cache_slots: 4,
            cache_max_len: 256,
        }
    }

    /// Small shapes with uneven sizes (a one-token sequence, odd widths),
    /// quick on a CPU.
    pub fn small() -> Self {
        OpShapes {
            seq_lens: vec![7, 5, 1, 3],
            channels: 24,
            heads: HeadDims { n_heads: 4, n_kv_heads: 2, head_dim: 6 },
            intermediate: 40,
            vocab: 50,
            rows: 9,
            cache_slots: 3,
            cache_max_len: 12,
        }
    }

    /// Heads wider than the blocked attention kernels take (D = 160), so the
    /// one-warp-per-row kernels are checked too.
    pub fn wide_heads() -> Self {
        OpShapes {
            seq_lens: vec![40, 1, 23],
            channels: 64,
            heads: HeadDims { n_heads: 4, n_kv_heads: 2, head_dim: 160 },
            intermediate: 96,
            vocab: 300,
            rows: 30,
            cache_slots: 2,
            cache_max_len: 48,
        }
    }

    fn tokens(&self) -> usize {
        self.seq_lens.iter().sum()
    }
}

/// A buffer on both backends, with the host values it started from.
struct Twin<R: Backend, C: Backend, T: Element> {
    r: R::Buf<T>,
    c: C::Buf<T>,
    initial: Vec<T>,
}

struct Harness<'a, R: Backend, C: Backend> {
    b: Backends<'a, R, C>,
    rng: SapoRng,
    checks: Vec<Check>,
    /// The tolerance and element-type label of f32 outputs.
    tolerance: f64,
    dtype: &'static str,
}

impl<R: Backend, C: Backend> Harness<'_, R, C> {
    fn upload<T: Element>(&self, data: Vec<T>) -> Result<Twin<R, C, T>> {
        Ok(Twin {
            r: on("reference", self.b.reference.upload(&data))?,
            c: on("candidate", self.b.candidate.upload(&data))?,
            initial: data,
        })
    }

    /// Normal values with standard deviation `std`.
    fn random(&mut self, n: usize, std: f64) -> Result<Twin<R, C, f32>> {
        let data = (0..n).map(|_| (std * self.rng.standard_normal()) as f32).collect();
        self.upload(data)
    }

    /// NaN everywhere: an output the operation must overwrite.
    fn poisoned(&self, n: usize) -> Result<Twin<R, C, f32>> {
        self.upload(vec![f32::NAN; n])
    }

    fn below(&mut self, bound: usize) -> u32 {
        (self.rng.next_u64() % bound.max(1) as u64) as u32
    }

    /// Compares the leading `n` elements; with `accumulated`, what was added
    /// to the starting values.
    fn record(&mut self, op: &str, shape: String, twin: &Twin<R, C, f32>, n: usize, accumulated: bool) -> Result<()> {
        self.record_as(op, shape, twin, n, accumulated, self.dtype, self.tolerance)
    }

    /// [`Harness::record`] with its own element-type label and tolerance.
    #[allow(clippy::too_many_arguments)]
    fn record_as(
        &mut self,
        op: &str,
        shape: String,
        twin: &Twin<R, C, f32>,
        n: usize,
        accumulated: bool,
        dtype: &'static str,
        tolerance: f64,
    ) -> Result<()> {
        let mut reference = on("reference", self.b.reference.download(&twin.r))?;
        let mut candidate = on("candidate", self.b.candidate.download(&twin.c))?;
        reference.truncate(n);
        candidate.truncate(n);
        if accumulated {
            for (values, start) in [(&mut reference, &twin.initial), (&mut candidate, &twin.initial)] {
                values.iter_mut().zip(start).for_each(|(v, s)| *v -= s);
            }
        }
        let rel_error = relative_error(&reference, &candidate);
        self.checks.push(Check { op: op.to_string(), shape, dtype, rel_error, tolerance });
        Ok(())
    }
}

/// Runs every operation of the trait on both backends and returns one
/// [`Check`] per output.
///
/// # Errors
/// A backend error (an operation refused its inputs or the device failed).
pub fn check_ops<R: Backend, C: Backend>(
    backends: Backends<'_, R, C>,
    shapes: &OpShapes,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut h = Harness {
        b: backends,
        rng: SapoRng::from_seed_u64(seed),
        checks: Vec::new(),
        tolerance: F32_OP_TOLERANCE,
        dtype: "f32",
    };
    buffers(&mut h)?;
    matmuls(&mut h, shapes)?;
    bf16_products(&mut h, shapes)?;
    linear_algebra(&mut h, shapes)?;
    layers(&mut h, shapes)?;
    attention(&mut h, shapes)?;
    logprobs(&mut h, shapes)?;
    optimizers(&mut h, shapes)?;
    Ok(h.checks)
}

fn buffers<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>) -> Result<()> {
    let n = 1000;
    let mut twin = h.poisoned(n)?;
    let data: Vec<f32> = (0..n / 2).map(|i| (i as f32).sin()).collect();
    on("reference", h.b.reference.write(&mut twin.r, &data))?;
    on("candidate", h.b.candidate.write(&mut twin.c, &data))?;
    let (r, c) = (on("reference", h.b.reference.download(&twin.r))?, on("candidate", h.b.candidate.download(&twin.c))?);
    let written = relative_error(&r[..n / 2], &c[..n / 2]) + relative_error(&data, &c[..n / 2]);
    let untouched = c[n / 2..].iter().all(|v| v.is_nan()) && r[n / 2..].iter().all(|v| v.is_nan());
    let rel_error = if untouched { written } else { f64::INFINITY };
    h.checks.push(Check {
        op: "upload/write/download".into(),
        shape: format!("n={n}"),
        dtype: "f32",
        rel_error,
        tolerance: 0.0,
    });
    let ids: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let ids_twin = h.upload(ids.clone())?;
    let back = on("candidate", h.b.candidate.download(&ids_twin.c))?;
    let rel_error = if back == ids && h.b.candidate.len(&ids_twin.c) == n { 0.0 } else { f64::INFINITY };
    h.checks.push(Check {
        op: "upload/download".into(),
        shape: format!("n={n}"),
        dtype: "u32",
        rel_error,
        tolerance: 0.0,
    });

    let source = h.random(n, 1.0)?;
    let mut copy = h.poisoned(n)?;
    on("reference", h.b.reference.copy(&mut copy.r, &source.r))?;
    on("candidate", h.b.candidate.copy(&mut copy.c, &source.c))?;
    h.record("copy", format!("n={n}"), &copy, n, false)?;
    let mut zeroed = h.random(n, 1.0)?;
    on("reference", h.b.reference.fill_zero(&mut zeroed.r))?;
    on("candidate", h.b.candidate.fill_zero(&mut zeroed.c))?;
    let c = on("candidate", h.b.candidate.download(&zeroed.c))?;
    let rel_error = if c.iter().all(|&v| v == 0.0) { 0.0 } else { f64::INFINITY };
    h.checks.push(Check { op: "fill_zero".into(), shape: format!("n={n}"), dtype: "f32", rel_error, tolerance: 0.0 });
    Ok(())
}

/// The matrix products alone, labelled `dtype` and held to `tolerance`: for
/// a candidate whose products run in a reduced precision such as TF32
/// (relative error about 5e-4 by design).
///
/// # Errors
/// A backend error.
pub fn check_matmuls<R: Backend, C: Backend>(
    backends: Backends<'_, R, C>,
    shapes: &OpShapes,
    seed: u64,
    dtype: &'static str,
    tolerance: f64,
) -> Result<Vec<Check>> {
    let mut h = Harness { b: backends, rng: SapoRng::from_seed_u64(seed), checks: Vec::new(), tolerance, dtype };
    matmuls(&mut h, shapes)?;
    Ok(h.checks)
}

fn matmuls<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let (t, c, i) = (s.tokens(), s.channels, s.intermediate);
    // The four layouts a linear layer's forward and backward use.
    let specs = [
        ("x·Wᵀ", MatmulSpec { m: t, k: c, n: i, transpose_a: false, transpose_b: true, accumulate: false }),
        ("dy·W (+=)", MatmulSpec { m: t, k: i, n: c, transpose_a: false, transpose_b: false, accumulate: true }),
        ("dyᵀ·x (+=)", MatmulSpec { m: i, k: t, n: c, transpose_a: true, transpose_b: false, accumulate: true }),
        ("aᵀ·bᵀ", MatmulSpec { m: c, k: t, n: i, transpose_a: true, transpose_b: true, accumulate: false }),
    ];
    for (label, spec) in specs {
        let a = h.random(spec.a_len(), 1.0)?;
        let b = h.random(spec.b_len(), 0.05)?;
        let mut out = if spec.accumulate { h.random(spec.out_len(), 1.0)? } else { h.poisoned(spec.out_len())? };
        on("reference", h.b.reference.matmul(&mut out.r, &a.r, &b.r, spec))?;
        on("candidate", h.b.candidate.matmul(&mut out.c, &a.c, &b.c, spec))?;
        let shape = format!("{label} m={} k={} n={}", spec.m, spec.k, spec.n);
        h.record("matmul", shape, &out, spec.out_len(), spec.accumulate)?;
    }
    let (batch, d) = (s.heads.n_heads, s.heads.head_dim);
    let spec = MatmulSpec { m: 64, k: d, n: 64, transpose_a: false, transpose_b: true, accumulate: false };
    let a = h.random(spec.a_len() * batch, 1.0)?;
    let b = h.random(spec.b_len() * batch, 1.0)?;
    let mut out = h.poisoned(spec.out_len() * batch)?;
    on("reference", h.b.reference.matmul_batched(&mut out.r, &a.r, &b.r, spec, batch))?;
    on("candidate", h.b.candidate.matmul_batched(&mut out.c, &a.c, &b.c, spec, batch))?;
    h.record("matmul_batched", format!("batch={batch} m=64 k={d} n=64"), &out, spec.out_len() * batch, false)
}

/// Rounding to bf16 (bit for bit, edge cases included) and the bf16
/// products: the same bf16 operands on both sides, so only the f32
/// summation order differs and the f32 tolerance applies.
fn bf16_products<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let n = s.tokens() * s.channels;
    let mut values: Vec<f32> = (0..n).map(|_| h.rng.standard_normal() as f32).collect();
    // Ties to even both ways, the largest finite value and what rounds past
    // it, subnormals, signed zeros, infinities and NaNs with payloads.
    let edges = [
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::from_bits(0xbf80_8001),
        f32::MAX,
        f32::from_bits(0x7f7f_8000),
        f32::from_bits(0x0000_8001),
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc1_2345),
    ];
    values[..edges.len()].copy_from_slice(&edges);
    let x = h.upload(values)?;
    // Poisoned with a NaN no input rounds to, so an unwritten element shows.
    let mut out = h.upload(vec![bf16::from_bits(0x7fff); n])?;
    on("reference", h.b.reference.round_to_bf16(&mut out.r, &x.r, n))?;
    on("candidate", h.b.candidate.round_to_bf16(&mut out.c, &x.c, n))?;
    let (r, c) = (on("reference", h.b.reference.download(&out.r))?, on("candidate", h.b.candidate.download(&out.c))?);
    let differing = r.iter().zip(&c).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    let unwritten = r.iter().chain(&c).filter(|v| v.to_bits() == 0x7fff).count();
    h.checks.push(Check {
        op: "round_to_bf16".into(),
        shape: format!("n={n} (bits; {} edge cases)", edges.len()),
        dtype: "bf16",
        rel_error: if differing + unwritten == 0 { 0.0 } else { (differing + unwritten) as f64 / n as f64 },
        tolerance: 0.0,
    });

    let (t, c, i) = (s.tokens(), s.channels, s.intermediate);
    let specs = [
        ("x·Wᵀ", MatmulSpec { m: t, k: c, n: i, transpose_a: false, transpose_b: true, accumulate: false }),
        ("dy·W (+=)", MatmulSpec { m: t, k: i, n: c, transpose_a: false, transpose_b: false, accumulate: true }),
        ("dyᵀ·x (+=)", MatmulSpec { m: i, k: t, n: c, transpose_a: true, transpose_b: false, accumulate: true }),
    ];
    for (label, spec) in specs {
        let mut rounded = |len: usize, std: f64| -> Vec<bf16> {
            (0..len).map(|_| bf16::from_f64(std * h.rng.standard_normal())).collect()
        };
        let (a, b) = (rounded(spec.a_len(), 1.0), rounded(spec.b_len(), 0.05));
        let (a, b) = (h.upload(a)?, h.upload(b)?);
        let mut out = if spec.accumulate { h.random(spec.out_len(), 1.0)? } else { h.poisoned(spec.out_len())? };
        on("reference", h.b.reference.matmul_bf16(&mut out.r, &a.r, &b.r, spec))?;
        on("candidate", h.b.candidate.matmul_bf16(&mut out.c, &a.c, &b.c, spec))?;
        let shape = format!("{label} m={} k={} n={}", spec.m, spec.k, spec.n);
        h.record_as("matmul_bf16", shape, &out, spec.out_len(), spec.accumulate, "bf16", F32_OP_TOLERANCE)?;
    }
    Ok(())
}

fn linear_algebra<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let (t, c) = (s.tokens(), s.channels);

    let mut out = h.random(t * c, 1.0)?;
    let bias = h.random(c, 1.0)?;
    on("reference", h.b.reference.add_bias(&mut out.r, &bias.r, t, c))?;
    on("candidate", h.b.candidate.add_bias(&mut out.c, &bias.c, t, c))?;
    h.record("add_bias", format!("rows={t} cols={c}"), &out, t * c, true)?;
    let dout = h.random(t * c, 1.0)?;
    let mut dbias = h.random(c, 1.0)?;
    on("reference", h.b.reference.add_bias_backward(&mut dbias.r, &dout.r, t, c))?;
    on("candidate", h.b.candidate.add_bias_backward(&mut dbias.c, &dout.c, t, c))?;
    h.record("add_bias_backward", format!("rows={t} cols={c}"), &dbias, c, true)
}

fn layers<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    let (t, c, v, i) = (s.tokens(), s.channels, s.vocab, s.intermediate);
    let ids: Vec<u32> = (0..t).map(|_| h.below(v)).collect();
    let ids = h.upload(ids)?;
    let table = h.random(v * c, 0.02)?;
    let mut out = h.poisoned(t * c)?;
    on("reference", h.b.reference.embedding_forward(&mut out.r, &ids.r, &table.r, t, c))?;
    on("candidate", h.b.candidate.embedding_forward(&mut out.c, &ids.c, &table.c, t, c))?;
    h.record("embedding_forward", format!("T={t} C={c} V={v}"), &out, t * c, false)?;
    let dout = h.random(t * c, 1.0)?;
    let mut dtable = h.random(v * c, 1.0)?;
    on("reference", h.b.reference.embedding_backward(&mut dtable.r, &ids.r, &dout.r, t, c))?;
    on("candidate", h.b.candidate.embedding_backward(&mut dtable.c, &ids.c, &dout.c, t, c))?;
    h.record("embedding_backward", format!("T={t} C={c} V={v}"), &dtable, v * c, true)?;

    let inp = h.random(t * c, 1.0)?;
    let weight = h.random(c, 1.0)?;
    let (mut out, mut rstd) = (h.poisoned(t * c)?, h.poisoned(t)?);
    on("reference", h.b.reference.rms_norm_forward(&mut out.r, &mut rstd.r, &inp.r, &weight.r, t, c, 1e-5))?;
    on("candidate", h.b.candidate.rms_norm_forward(&mut out.c, &mut rstd.c, &inp.c, &weight.c, t, c, 1e-5))?;
    h.record("rms_norm_forward", format!("rows={t} cols={c}"), &out, t * c, false)?;
    h.record("rms_norm_forward (rstd)", format!("rows={t}"), &rstd, t, false)?;
    let dout = h.random(t * c, 1.0)?;
    let (mut dinp, mut dweight) = (h.random(t * c, 1.0)?, h.random(c, 1.0)?);
    on(
        "reference",
        h.b.reference.rms_norm_backward(&mut dinp.r, &mut dweight.r, &dout.r, &inp.r, &weight.r, &rstd.r, t, c),
    )?;
    on(
        "candidate",
        h.b.candidate.rms_norm_backward(&mut dinp.c, &mut dweight.c, &dout.c, &inp.c, &weight.c, &rstd.c, t, c),
    )?;
    h.record("rms_norm_backward (dinp)", format!("rows={t} cols={c}"), &dinp, t * c, true)?;
    h.record("rms_norm_backward (dweight)", format!("rows={t} cols={c}"), &dweight, c, true)?;

    let heads = s.heads;
    let positions = h.upload(Packing::from_lengths(&s.seq_lens).positions)?;
    let n = t * heads.n_heads * heads.head_dim;
    let theta = 100_000.0;
    let shape = format!("T={t} H={} D={} θ={theta}", heads.n_heads, heads.head_dim);
    let mut x = h.random(n, 1.0)?;
    on("reference", h.b.reference.rope_forward(&mut x.r, &positions.r, t, heads.n_heads, heads.head_dim, theta))?;
    on("candidate", h.b.candidate.rope_forward(&mut x.c, &positions.c, t, heads.n_heads, heads.head_dim, theta))?;
    h.record("rope_forward", shape.clone(), &x, n, false)?;
    let mut dx = h.random(n, 1.0)?;
    on("reference", h.b.reference.rope_backward(&mut dx.r, &positions.r, t, heads.n_heads, heads.head_dim, theta))?;
    on("candidate", h.b.candidate.rope_backward(&mut dx.c, &positions.c, t, heads.n_heads, heads.head_dim, theta))?;
    h.record("rope_backward", shape, &dx, n, false)?;

    let n = t * i;
    let (gate, up) = (h.random(n, 2.0)?, h.random(n, 1.0)?);
    let mut out = h.poisoned(n)?;
    on("reference", h.b.reference.swiglu_forward(&mut out.r, &gate.r, &up.r, n))?;
    on("candidate", h.b.candidate.swiglu_forward(&mut out.c, &gate.c, &up.c, n))?;
    h.record("swiglu_forward", format!("n={n}"), &out, n, false)?;
    let dout = h.random(n, 1.0)?;
    let (mut dgate, mut dup) = (h.random(n, 1.0)?, h.random(n, 1.0)?);
    on("reference", h.b.reference.swiglu_backward(&mut dgate.r, &mut dup.r, &dout.r, &gate.r, &up.r, n))?;
    on("candidate", h.b.candidate.swiglu_backward(&mut dgate.c, &mut dup.c, &dout.c, &gate.c, &up.c, n))?;
    h.record("swiglu_backward (dgate)", format!("n={n}"), &dgate, n, true)?;
    h.record("swiglu_backward (dup)", format!("n={n}"), &dup, n, true)?;

    let n = t * c;
    let (a, b) = (h.random(n, 1.0)?, h.random(n, 1.0)?);
    let mut out = h.poisoned(n)?;
    on("reference", h.b.reference.add(&mut out.r, &a.r, &b.r, n))?;
    on("candidate", h.b.candidate.add(&mut out.c, &a.c, &b.c, n))?;
    h.record("add", format!("n={n}"), &out, n, false)?;
    let mut acc = h.random(n, 1.0)?;
    on("reference", h.b.reference.add_assign(&mut acc.r, &a.r, n))?;
    on("candidate", h.b.candidate.add_assign(&mut acc.c, &a.c, n))?;
    h.record("add_assign", format!("n={n}"), &acc, n, true)
}
