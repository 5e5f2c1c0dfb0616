//! One error type for the crate. Driver and compiler errors keep their source.

use cudarc::driver::DriverError;

/// What can go wrong between "is there a GPU?" and a finished launch.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No usable driver or device: run on the CPU, or on a machine with an NVIDIA GPU.
    #[error("no CUDA driver ({0})")]
    Unavailable(String),
    /// NVRTC (from the CUDA toolkit) is missing: install the toolkit or set CUDA_HOME.
    #[error("no NVRTC ({0}); install the CUDA toolkit or set CUDA_HOME")]
    NoCompiler(String),
    /// A kernel source did not compile; the log is NVRTC's.
    #[error("NVRTC could not compile {file}: {log}")]
    Compile { file: &'static str, log: String },
    /// A CUDA driver call (allocation, copy, module load, launch) failed.
    #[error("CUDA driver call failed: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLAS call (handle creation, GEMM) failed.
    #[error("cuBLAS call failed: {0}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    /// A buffer's length does not match the shape passed with it.
    #[error("{kernel}: `{buffer}` holds {got} elements, the shape needs {want}")]
    Shape {
        kernel: &'static str,
        buffer: &'static str,
        got: usize,
        want: usize,
    },
    /// An NCCL call failed, or NCCL is missing (its errors carry no `std::error::Error`, so the
    /// message is their debug form).
    #[error("NCCL: {0}")]
    Nccl(String),
    /// A shape the kernels were not built for (e.g. a head size without an instantiation).
    #[error("{kernel}: {what}")]
    Unsupported { kernel: &'static str, what: String },
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Checks that a buffer has exactly the length its shape implies.
pub(crate) fn check_len(
    kernel: &'static str,
    buffer: &'static str,
    got: usize,
    want: usize,
) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::Shape {
            kernel,
            buffer,
            got,
            want,
        })
    }
}

/// Kernel arguments are 32-bit: refuse sizes that would not fit rather than wrap.
pub(crate) fn to_u32(kernel: &'static str, what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| KernelError::Unsupported {
        kernel,
        what: format!("{what} = {v} does not fit in 32 bits"),
    })
}

/// Kernels that read x and W as 16-byte vectors (the GEMV, the skinny GEMM) refuse operands
/// that do not start on a 16-byte boundary.
pub(crate) fn check_aligned16(
    kernel: &'static str,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    x: &cudarc::driver::CudaView<'_, half::bf16>,
    weight: &cudarc::driver::CudaView<'_, half::bf16>,
) -> Result<()> {
    use cudarc::driver::DevicePtr;
    let (xp, _x) = x.device_ptr(stream);
    let (wp, _w) = weight.device_ptr(stream);
    if (xp | wp) % 16 == 0 {
        Ok(())
    } else {
        Err(KernelError::Unsupported {
            kernel,
            what: "x or weight is not 16-byte aligned".into(),
        })
    }
}
