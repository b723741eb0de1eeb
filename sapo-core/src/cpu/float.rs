//! The float types the CPU reference computes in: `f32` for training, `f64`
//! for the finite-difference tests of every operation.

/// `f32` or `f64`, with what the CPU operations need.
///
/// ```
/// use sapo_core::cpu::CpuFloat;
/// fn half<F: CpuFloat>(x: F) -> F { x * F::from_f64(0.5) }
/// assert_eq!(half(3.0_f32), 1.5);
/// ```
pub trait CpuFloat:
    num_traits::Float + ndarray::LinalgScalar + core::iter::Sum + core::fmt::Debug + Default + Send + Sync + 'static
{
    /// Rounds an `f64` to this type.
    fn from_f64(value: f64) -> Self;
    /// Widens to `f64` (named apart from `num_traits::ToPrimitive::to_f64`,
    /// which returns an `Option`).
    fn widen(self) -> f64;
    /// `Σ_i e^{values[i] − shift}` in f64: exact (libm) for `f64`, the
    /// vectorised [`super::fast_exp`] for `f32`.
    fn sum_exp_shifted(values: &[Self], shift: Self) -> f64;
    /// `eˣ`, vectorisable for `f32` (≤ 4 ulp), libm for `f64`.
    fn fast_exp(self) -> Self;
    /// Lends this thread's reusable scratch vector, so per-task work buffers
    /// are not fresh allocations (fresh memory is slow to fault in here).
    #[cfg(feature = "fast")]
    fn with_thread_scratch<R>(f: impl FnOnce(&mut alloc::vec::Vec<Self>) -> R) -> R;
}

#[cfg(feature = "fast")]
std::thread_local! {
    static SCRATCH_F32: core::cell::RefCell<alloc::vec::Vec<f32>> = const { core::cell::RefCell::new(alloc::vec::Vec::new()) };
    static SCRATCH_F64: core::cell::RefCell<alloc::vec::Vec<f64>> = const { core::cell::RefCell::new(alloc::vec::Vec::new()) };
}

impl CpuFloat for f32 {
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn widen(self) -> f64 {
        f64::from(self)
    }
    fn sum_exp_shifted(values: &[Self], shift: Self) -> f64 {
        super::fast_exp::sum_exp_shifted(values, shift)
    }
    fn fast_exp(self) -> Self {
        super::fast_exp::exp_f32(self)
    }
    #[cfg(feature = "fast")]
    fn with_thread_scratch<R>(f: impl FnOnce(&mut alloc::vec::Vec<Self>) -> R) -> R {
        SCRATCH_F32.with(|scratch| f(&mut scratch.borrow_mut()))
    }
}

impl CpuFloat for f64 {
    fn from_f64(value: f64) -> Self {
        value
    }
    fn widen(self) -> f64 {
        self
    }
    fn sum_exp_shifted(values: &[Self], shift: Self) -> f64 {
        values.iter().map(|&v| libm::exp(v - shift)).sum()
    }
    fn fast_exp(self) -> Self {
        libm::exp(self)
    }
    #[cfg(feature = "fast")]
    fn with_thread_scratch<R>(f: impl FnOnce(&mut alloc::vec::Vec<Self>) -> R) -> R {
        SCRATCH_F64.with(|scratch| f(&mut scratch.borrow_mut()))
    }
}
