//! The floating-point types the objectives accept.
//!
//! Objectives are generic over [`Real`] (implemented for `f32` and `f64`).
//! Whatever the caller's type, the per-pair arithmetic runs in `f64` and the
//! results are rounded once at the end: an `f32` caller gets the correctly
//! rounded value of the exact formula, which is what a GPU kernel should be
//! compared against.

/// A floating-point type objectives take and return: `f32` or `f64`.
///
/// Sealed: the conversions must be exact (`f32 → f64`) or correctly rounded
/// (`f64 → f32`), which only the built-in types guarantee.
///
/// ```
/// use sapo_core::Real;
/// assert_eq!(<f32 as Real>::from_f64(0.1), 0.1_f32);
/// assert_eq!(1.5_f32.to_f64(), 1.5);
/// ```
pub trait Real: Copy + Default + PartialOrd + core::fmt::Debug + sealed::Sealed + 'static {
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Converts from `f64`, rounding to nearest (ties to even).
    fn from_f64(value: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
