//! GPU tests on a machine without one: skip with the reason printed, never fail or panic.

use engine::config::Device;

/// True when a CUDA device is usable; otherwise prints why the test is skipped (`Device`'s
/// resolve checks that the driver library is present before any driver call: cudarc panics
/// when asked blindly).
pub fn gpu_or_skip() -> bool {
    match Device::Cuda(0).resolve() {
        Ok(_) => true,
        Err(e) => {
            use std::io::Write;
            // Past the test harness's capture, so `cargo test` shows why nothing ran.
            let _ = writeln!(std::io::stderr(), "skipped: {e}");
            false
        }
    }
}
