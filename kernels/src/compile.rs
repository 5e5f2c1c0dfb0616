//! NVRTC: CUDA C source to PTX at start-up, for the GPU we run on (sm_90, Hopper).
//!
//! Compiling at start-up (instead of shipping PTX built by nvcc) keeps the build free of the
//! CUDA toolkit: `cargo build` works anywhere, and the `.cu` files are the only kernel source.
//! Each file is compiled as `common.cuh` followed by the file, one NVRTC program per file.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use crate::error::{KernelError, Result};

/// Included at the top of every kernel file (bf16 vector helpers, block reduction).
const COMMON: &str = include_str!("../cuda/common.cuh");

/// The architecture we compile for. The H200/H100 are sm_90.
pub const ARCH: &str = "sm_90";

/// Where `cuda_bf16.h` lives: `$CUDA_HOME/include`, else `/usr/local/cuda/include`.
pub fn cuda_include_dir() -> String {
    match std::env::var("CUDA_HOME") {
        Ok(home) if !home.is_empty() => format!("{home}/include"),
        _ => "/usr/local/cuda/include".to_string(),
    }
}

/// Compiles one kernel file to PTX.
pub(crate) fn compile(file: &'static str, source: &str) -> Result<Ptx> {
    let opts = CompileOptions {
        arch: Some(ARCH),
        include_paths: vec![cuda_include_dir()],
        name: Some(file.to_string()),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    compile_ptx_with_opts(format!("{COMMON}\n#line 1 \"{file}\"\n{source}"), opts).map_err(|e| {
        let log = match &e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        };
        KernelError::Compile { file, log }
    })
}
