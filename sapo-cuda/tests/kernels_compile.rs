//! Every kernel compiles under NVRTC for the architectures CI checks, with
//! or without a GPU: NVRTC is a library (PyPI's `nvidia-cuda-nvrtc` wheel),
//! so a syntax or type error in `src/kernels/*.cu` fails here, not on a GPU
//! machine later. CI sets `SAPO_REQUIRE_NVRTC=1` so a missing library fails
//! instead of skipping.

use sapo_cuda::{CHECKED_ARCHS, CudaError, KERNEL_NAMES, compile_kernels, compile_source, nvrtc_available};

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var_os("SAPO_REQUIRE_NVRTC").is_none(),
        "SAPO_REQUIRE_NVRTC is set but libnvrtc.so was not found on the library path"
    );
    println!("skipped: NVRTC not found (set LD_LIBRARY_PATH to the nvidia-cuda-nvrtc wheel's lib folder)");
    false
}

#[test]
fn every_kernel_compiles_for_every_checked_arch() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in CHECKED_ARCHS {
        let ptx = compile_kernels(arch).unwrap_or_else(|error| panic!("{error}")).to_src();
        assert!(ptx.contains(&format!(".target {arch}")), "PTX for {arch} names another target");
        for name in KERNEL_NAMES {
            assert!(ptx.contains(&format!(".entry {name}(")), "kernel {name} is missing from the PTX for {arch}");
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_a_compile_error_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }";
    match compile_source(broken, "sm_80") {
        Err(CudaError::Compile { arch, log }) => {
            assert_eq!(arch, "sm_80");
            assert!(log.contains("undefined_name"), "the log does not name the error: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
