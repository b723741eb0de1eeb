//! Chunked iteration that runs across threads with feature `fast` (rayon)
//! and in order without it, so each elementwise operation is written once.
//! Every use writes disjoint chunks, so the result does not depend on the
//! schedule: runs are deterministic with and without threads.

/// Elements per chunk of an elementwise operation: large enough to amortise
/// a task, small enough to balance two cores.
pub(crate) const CHUNK: usize = 1 << 14;

/// `slice.chunks_mut(size)`, parallel with feature `fast`.
#[cfg(feature = "fast")]
macro_rules! chunks_mut {
    ($slice:expr, $size:expr) => {
        rayon::slice::ParallelSliceMut::par_chunks_mut($slice, $size)
    };
}
#[cfg(not(feature = "fast"))]
macro_rules! chunks_mut {
    ($slice:expr, $size:expr) => {
        <[_]>::chunks_mut($slice, $size)
    };
}

/// `slice.chunks(size)`, parallel with feature `fast`.
#[cfg(feature = "fast")]
macro_rules! chunks {
    ($slice:expr, $size:expr) => {
        rayon::slice::ParallelSlice::par_chunks($slice, $size)
    };
}
#[cfg(not(feature = "fast"))]
macro_rules! chunks {
    ($slice:expr, $size:expr) => {
        <[_]>::chunks($slice, $size)
    };
}

pub(crate) use {chunks, chunks_mut};

/// Brings the iterator traits the macros' results need into scope.
pub(crate) mod prelude {
    #[cfg(feature = "fast")]
    pub(crate) use rayon::iter::{IndexedParallelIterator, ParallelIterator};
}
