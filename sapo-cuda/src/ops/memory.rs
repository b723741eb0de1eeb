//! Allocation and copies between the host and the device, and on the
//! device: no kernels, only the stream's copies and fills. The CPU reference
//! implements these inline in `cpu/mod.rs`.

use sapo_core::backend::Element;

use crate::buffer::{CudaBuf, as_bytes, as_bytes_mut};
use crate::device::CudaBackend;
use crate::error::{Result, check_at_least, check_exact};

/// `len` zeroed elements.
pub(crate) fn zeros<T: Element>(backend: &CudaBackend, len: usize) -> Result<CudaBuf<T>> {
    Ok(CudaBuf::from_bytes(backend.alloc_bytes(len * core::mem::size_of::<T>())?, len))
}

/// A new buffer holding `data`.
pub(crate) fn upload<T: Element>(backend: &CudaBackend, data: &[T]) -> Result<CudaBuf<T>> {
    let mut buf = zeros::<T>(backend, data.len())?;
    write(backend, &mut buf, data)?;
    Ok(buf)
}

/// Copies `data` into the leading elements of `buf`.
pub(crate) fn write<T: Element>(backend: &CudaBackend, buf: &mut CudaBuf<T>, data: &[T]) -> Result {
    check_at_least("write", "buf", buf.len, data.len())?;
    if data.is_empty() {
        return Ok(());
    }
    let bytes = as_bytes(data);
    let mut destination = buf.bytes.slice_mut(..bytes.len());
    backend.stream().memcpy_htod(bytes, &mut destination)?;
    Ok(())
}

/// Every element of `buf`, once the queued work is done.
pub(crate) fn download<T: Element>(backend: &CudaBackend, buf: &CudaBuf<T>) -> Result<Vec<T>> {
    let mut out = vec![T::default(); buf.len];
    if buf.len > 0 {
        let source = buf.bytes.slice(..buf.byte_len());
        backend.stream().memcpy_dtoh(&source, as_bytes_mut(&mut out))?;
    }
    backend.stream().synchronize()?;
    Ok(out)
}

/// Zeroes every element of `buf`.
pub(crate) fn fill_zero(backend: &CudaBackend, buf: &mut CudaBuf<f32>) -> Result {
    let bytes = buf.byte_len();
    if bytes > 0 {
        backend.stream().memset_zeros(&mut buf.bytes.slice_mut(..bytes))?;
    }
    Ok(())
}

/// `dst = src`, of equal lengths.
pub(crate) fn copy(backend: &CudaBackend, dst: &mut CudaBuf<f32>, src: &CudaBuf<f32>) -> Result {
    check_exact("copy", "src", src.len, dst.len)?;
    let bytes = src.byte_len();
    if bytes > 0 {
        backend.stream().memcpy_dtod(&src.bytes.slice(..bytes), &mut dst.bytes.slice_mut(..bytes))?;
    }
    Ok(())
}
