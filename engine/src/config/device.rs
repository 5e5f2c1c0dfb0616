//! Which device the model runs on: `--device cpu | cuda | cuda:N | auto`.
//!
//! `auto` is a GPU when one is usable and the CPU otherwise, so the same command works on a
//! laptop and on a GPU machine. An explicit `cuda` on a machine without one is an error with
//! one line saying why, never a panic (cudarc panics at the first driver call when the driver
//! is missing, so the check looks for the libraries without calling into them).

use std::fmt;
use std::str::FromStr;

use crate::error::{EngineError, Result};

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    Cpu,
    /// GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
    /// A GPU if one is usable, else the CPU.
    #[default]
    Auto,
}

impl FromStr for Device {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(EngineError::InvalidArgument(format!(
                    "--device {s}: expected cpu, cuda, cuda:N or auto"
                ))),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

impl Device {
    /// The device to run on: `Auto` becomes `Cuda(0)` when a GPU is usable and `Cpu`
    /// otherwise; `Cuda(n)` without a usable GPU `n` is an error that says why.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Cpu => Ok(Device::Cpu),
            Device::Cuda(n) => match (cuda_device_count(), check_gpu(n)) {
                (Ok(count), _) if n >= count => Err(EngineError::InvalidArgument(format!(
                    "--device {self}: this machine has {count} CUDA device(s); use --device cpu"
                ))),
                (_, Ok(())) => Ok(Device::Cuda(n)),
                (_, Err(why)) => Err(EngineError::InvalidArgument(format!(
                    "--device {self}: no usable GPU: {why}; use --device cpu"
                ))),
            },
            // A GPU the kernels cannot run on (too old) is not "usable": the CPU it is.
            Device::Auto => Ok(match check_gpu(0) {
                Ok(()) => Device::Cuda(0),
                Err(_) => Device::Cpu,
            }),
        }
    }
}

/// CUDA devices on this machine, or why none can be used.
fn cuda_device_count() -> std::result::Result<usize, String> {
    kernels::gpu_available().map_err(|e| e.to_string())?;
    kernels::cudarc::driver::CudaContext::device_count()
        .map(|n| n as usize)
        .map_err(|e| format!("the driver reports {e}"))
}

/// Whether GPU `n` can run the kernels (exists, new enough), or why not.
fn check_gpu(n: usize) -> std::result::Result<(), String> {
    kernels::check_device(n).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_names_users_type() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        let err = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(err.contains("expected cpu, cuda"), "{err}");
        assert!("cuda:x".parse::<Device>().is_err());
    }

    #[test]
    fn cpu_resolves_to_itself_and_auto_to_something_usable() {
        assert_eq!(Device::Cpu.resolve().unwrap(), Device::Cpu);
        let auto = Device::Auto.resolve().unwrap();
        assert!(matches!(auto, Device::Cpu | Device::Cuda(0)));
    }
}
