//! Prints the PTX NVRTC makes of the backend's kernels for one target, to
//! read what the compiler did (local-memory spills show as `__local_depot`):
//!
//! ```text
//! LD_LIBRARY_PATH=<nvrtc lib folder> cargo run -p sapo-cuda --example kernel_ptx -- sm_90 > kernels.ptx
//! ```

fn main() -> Result<(), sapo_cuda::CudaError> {
    let arch = std::env::args().nth(1).unwrap_or_else(|| "sm_90".into());
    print!("{}", sapo_cuda::compile_kernels(&arch)?.to_src());
    Ok(())
}
