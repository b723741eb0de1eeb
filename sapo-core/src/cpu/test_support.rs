//! Random inputs, closeness and finite-difference checks for the CPU ops.

use alloc::vec::Vec;

use super::float::CpuFloat;
use crate::rng::SapoRng;

/// `len` values uniform in [−1, 1) excluding a band around 0, seeded.
pub fn random_vec<F: CpuFloat>(seed: u64, len: usize) -> Vec<F> {
    let mut rng = SapoRng::from_seed_and_stream(seed, 17);
    (0..len)
        .map(|_| {
            let magnitude = 0.1 + 0.9 * rng.next_f64();
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            F::from_f64(sign * magnitude)
        })
        .collect()
}

/// ‖a − b‖ / ‖b‖ ≤ tolerance; NaN never passes.
pub fn assert_close<F: CpuFloat>(a: &[F], b: &[F], tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let difference: f64 = a.iter().zip(b).map(|(x, y)| (x.widen() - y.widen()).powi(2)).sum::<f64>().sqrt();
    let scale: f64 = b.iter().map(|y| y.widen().powi(2)).sum::<f64>().sqrt();
    let relative = difference / scale.max(f64::MIN_POSITIVE);
    assert!(relative <= tolerance, "{what}: relative error {relative:e} > {tolerance:e}");
}

/// Central differences of `loss` at `x` against `analytic`, in f64, over at
/// most 48 evenly spread entries; relative error ≤ `tolerance`.
pub fn check_gradients(what: &str, x: &[f64], analytic: &[f64], tolerance: f64, mut loss: impl FnMut(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let stride = x.len().div_ceil(48).max(1);
    let mut point = x.to_vec();
    let (mut numeric, mut chosen) = (Vec::new(), Vec::new());
    for i in (0..x.len()).step_by(stride) {
        let step = 1e-5 * x[i].abs().max(1.0);
        point[i] = x[i] + step;
        let plus = loss(&point);
        point[i] = x[i] - step;
        let minus = loss(&point);
        point[i] = x[i];
        numeric.push((plus - minus) / (2.0 * step));
        chosen.push(analytic[i]);
    }
    let difference: f64 = chosen.iter().zip(&numeric).map(|(a, n)| (a - n).powi(2)).sum::<f64>().sqrt();
    let scale: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    let relative = difference / scale.max(f64::MIN_POSITIVE);
    std::println!("finite differences: {what}: relative error {relative:.1e}");
    assert!(relative <= tolerance, "{what}: relative error {relative:e}\n analytic {chosen:?}\n numeric  {numeric:?}");
}
