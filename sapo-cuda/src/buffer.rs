//! Device buffers of any [`Element`] type.

use core::marker::PhantomData;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use sapo_core::backend::Element;

/// `len` elements of `T` in device memory.
///
/// The memory is held as bytes so that one buffer type serves every element
/// type of the `Backend` trait (f32, u32, bf16: plain values without
/// padding); kernels receive its device pointer and cuBLAS a typed view.
pub struct CudaBuf<T> {
    pub(crate) bytes: CudaSlice<u8>,
    pub(crate) len: usize,
    marker: PhantomData<T>,
}

impl<T: Element> CudaBuf<T> {
    pub(crate) fn from_bytes(bytes: CudaSlice<u8>, len: usize) -> Self {
        CudaBuf { bytes, len, marker: PhantomData }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a buffer of no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the buffer's elements (without the allocation's padding).
    pub(crate) fn byte_len(&self) -> usize {
        self.len * core::mem::size_of::<T>()
    }
}

impl CudaBuf<f32> {
    /// A typed view for cuBLAS.
    pub(crate) fn view(&self) -> CudaView<'_, f32> {
        // SAFETY: the allocation holds `len` f32 values (see `alloc_bytes`).
        unsafe { self.bytes.transmute::<f32>(self.len) }.expect("a CudaBuf<f32> holds len f32 values")
    }

    /// A typed mutable view for cuBLAS.
    pub(crate) fn view_mut(&mut self) -> CudaViewMut<'_, f32> {
        let len = self.len;
        // SAFETY: as in `view`.
        unsafe { self.bytes.transmute_mut::<f32>(len) }.expect("a CudaBuf<f32> holds len f32 values")
    }
}

impl<T> core::fmt::Debug for CudaBuf<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CudaBuf<{}>[{}]", core::any::type_name::<T>(), self.len)
    }
}

/// The bytes of a slice of plain values.
pub(crate) fn as_bytes<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: every `Element` (f32, u32, bf16; the trait is sealed) is a plain
    // value with no padding and no invalid bit patterns.
    unsafe { core::slice::from_raw_parts(data.as_ptr().cast::<u8>(), core::mem::size_of_val(data)) }
}

/// The bytes of a mutable slice of plain values.
pub(crate) fn as_bytes_mut<T: Element>(data: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; any byte pattern is a valid element.
    unsafe { core::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), core::mem::size_of_val(data)) }
}
