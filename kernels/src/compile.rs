//! NVRTC: CUDA C source to machine code (a CUBIN) at start-up, for the GPU we run on (sm_90,
//! Hopper, or newer).
//!
//! Compiling at start-up (instead of shipping binaries built by nvcc) keeps the build free of
//! the CUDA toolkit: `cargo build` works anywhere, and the `.cu` files are the only kernel
//! source. Each file is compiled as `common.cuh` followed by the file, one NVRTC program per
//! file.
//!
//! Why a CUBIN and not PTX: NVRTC given a real architecture (`sm_90`) runs the assembler
//! itself, in the thread that asked, so the files are assembled in parallel. Handing the
//! driver PTX instead makes it assemble every module again, one after another, when each is
//! loaded: on a fresh machine that was most of the first run's start-up. The CUBIN is also
//! what [`crate::kernel_cache`] keeps between runs.

use std::ffi::{CStr, CString};

use cudarc::nvrtc::{result, sys, Ptx};

use crate::error::{KernelError, Result};
use crate::kernel_cache;

/// Included at the top of every kernel file (bf16 vector helpers, block reduction).
const COMMON: &str = include_str!("../cuda/common.cuh");

/// The oldest architecture the kernels are written for (Hopper: the H200/H100). The engine's
/// kernels are compiled for the GPU found ([`arch`]); stage 4's exercises compile to PTX for
/// this one, which the driver assembles for any GPU at least as new.
pub const ARCH: &str = "sm_90";

/// NVRTC's name of the real architecture with compute capability `(major, minor)`: a CUBIN
/// runs only on its own architecture, so it is made for the GPU at hand (an sm_90 one would
/// not load on a newer GPU, where PTX could still have been assembled). On Hopper (9.0) that
/// is `sm_90a`, sm_90 with the features no later GPU keeps (wgmma, used by
/// `skinny_gemm.cu`'s TMA main loop): the binary is for this GPU only, as every CUBIN is.
pub fn arch((major, minor): (i32, i32)) -> String {
    if (major, minor) == (9, 0) {
        return ARCH_HOPPER_FEATURES.to_string();
    }
    format!("sm_{major}{minor}")
}

/// [`arch`] on an H100 or H200: the architecture whose CUBINs may use wgmma.
pub const ARCH_HOPPER_FEATURES: &str = "sm_90a";

/// Where `cuda_bf16.h` lives: `$CUDA_HOME/include`, else `/usr/local/cuda/include`.
pub fn cuda_include_dir() -> String {
    match std::env::var("CUDA_HOME") {
        Ok(home) if !home.is_empty() => format!("{home}/include"),
        _ => "/usr/local/cuda/include".to_string(),
    }
}

/// Compiles one kernel file to a CUBIN for `arch` (see [`arch`]), or takes it from the
/// kernel cache when the same source, options (the architecture among them) and NVRTC made
/// it before. `prelude` (`#define`s, usually empty) goes before `common.cuh`: how
/// [`crate::kernel_timeline`] builds the kernels with its probe compiled in.
pub(crate) fn compile_with(
    file: &'static str,
    prelude: &str,
    source: &str,
    arch: &str,
) -> Result<Ptx> {
    let cubin = compile_cubin(file, prelude, source, arch, kernel_cache::dir().as_deref())?;
    Ok(Ptx::from_binary(cubin))
}

/// [`compile_with`]'s work, with a prelude placed before `common.cuh` and the cache directory
/// given (`None`: no cache).
fn compile_cubin(
    file: &'static str,
    prelude: &str,
    source: &str,
    arch: &str,
    cache: Option<&std::path::Path>,
) -> Result<Vec<u8>> {
    let src = format!("{prelude}{COMMON}\n#line 1 \"{file}\"\n{source}");
    let options = [
        format!("--gpu-architecture={arch}"),
        format!("--include-path={}", cuda_include_dir()),
        "--std=c++17".to_string(),
    ];
    let key = kernel_cache::fnv1a(&[
        src.as_bytes(),
        options.join(" ").as_bytes(),
        nvrtc_version().as_bytes(),
    ]);
    let entry = cache.map(|dir| kernel_cache::entry(dir, file, key));
    if let Some(cubin) = entry.as_deref().and_then(kernel_cache::read) {
        tracing::debug!(target: "kernel_cache", file, "compiled kernels found in the cache");
        return Ok(cubin);
    }
    let cubin = nvrtc_cubin(file, &src, &options)?;
    if let Some(path) = &entry {
        if let Err(e) = kernel_cache::write(path, &cubin) {
            // Only the next run's start-up is lost.
            tracing::debug!(target: "kernel_cache", file, path = %path.display(), "not cached: {e}");
        }
    }
    Ok(cubin)
}

/// NVRTC's version, `major.minor` (part of the cache key: another compiler, another binary).
fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers; NVRTC only writes them.
    match unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result() {
        Ok(()) => format!("{major}.{minor}"),
        Err(_) => "unknown".to_string(),
    }
}

/// One NVRTC program: created, compiled, its CUBIN copied out, destroyed.
fn nvrtc_cubin(file: &'static str, src: &str, options: &[String]) -> Result<Vec<u8>> {
    let fail = |log: String| KernelError::Compile { file, log };
    let c_src = CString::new(src).map_err(|e| fail(e.to_string()))?;
    let c_name = CString::new(file).map_err(|e| fail(e.to_string()))?;
    let prog = result::create_program(&c_src, Some(&c_name)).map_err(|e| fail(e.to_string()))?;
    // SAFETY: `prog` was created just above from `c_src` and `c_name`, which outlive it, and
    // is destroyed only after this call, once.
    let cubin = unsafe { compile_program(prog, options) };
    // SAFETY: as above; nothing uses `prog` after this.
    let _ = unsafe { result::destroy_program(prog) };
    cubin.map_err(fail)
}

/// Compiles `prog` and returns its CUBIN, or the compiler's log.
///
/// # Safety
/// `prog` must be a live program from `nvrtcCreateProgram`.
unsafe fn compile_program(prog: sys::nvrtcProgram, options: &[String]) -> Result<Vec<u8>, String> {
    // SAFETY: the caller's contract; the options are copied into C strings by cudarc.
    if let Err(e) = unsafe { result::compile_program(prog, options) } {
        // SAFETY: `prog` is live; the log is a NUL-terminated buffer NVRTC filled.
        let log = unsafe { result::get_program_log(prog) }
            .map(|log| {
                unsafe { CStr::from_ptr(log.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|_| e.to_string());
        return Err(log);
    }
    let mut size = 0usize;
    // SAFETY: `prog` compiled; `size` is a live out-pointer.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| format!("no CUBIN: {e}"))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` holds exactly the `size` bytes NVRTC said it will write.
    unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| format!("no CUBIN: {e}"))?;
    Ok(cubin)
}

/// For the kernel files' own tests: compiles `source` (after `common.cuh`) for sm_90 to a
/// CUBIN and to PTX, and returns the names of the PTX's `.entry` points; `None` (after printing
/// why) where NVRTC is not found, as on CI. NVRTC needs no GPU.
#[cfg(test)]
pub(crate) fn entry_points(file: &'static str, source: &str) -> Option<Vec<String>> {
    use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    // SAFETY: only looks for the library; no NVRTC call.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("skipped: libnvrtc was not found");
        return None;
    }
    compile_with(file, "", source, ARCH)
        .unwrap_or_else(|e| panic!("{file} compiles to a CUBIN: {e}"));
    let ptx = compile_ptx_with_opts(
        format!("{COMMON}\n{source}"),
        CompileOptions {
            arch: Some("compute_90"),
            include_paths: vec![cuda_include_dir()],
            options: vec!["--std=c++17".into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{file} compiles to PTX: {e}"))
    .to_src();
    let entries = ptx
        .lines()
        .filter(|l| l.contains(".entry"))
        .filter_map(|l| l.trim_end().strip_suffix('(')?.split_whitespace().last())
        .map(str::to_string)
        .collect();
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: where its library is found (CI has none), a kernel file compiles
    /// to a CUBIN, the second compile is the cached one, and a damaged entry is rebuilt.
    #[test]
    fn a_kernel_file_compiles_to_a_cubin_and_the_next_run_reads_it_back() {
        // SAFETY: only looks for the library; no NVRTC call.
        if !unsafe { sys::is_culib_present() } {
            eprintln!("skipped: libnvrtc was not found");
            return;
        }
        let dir = std::env::temp_dir().join(format!("lab-compile-test-{}", std::process::id()));
        let (file, source) = (crate::silu_and_mul::FILE, crate::silu_and_mul::SOURCE);
        let cubin = compile_cubin(file, "", source, "sm_90", Some(&dir)).expect("compiles");
        assert_eq!(&cubin[..4], b"\x7fELF", "a CUBIN is an ELF file");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary file left");
        let path = entries[0].as_ref().unwrap().path();
        assert_eq!(kernel_cache::read(&path).as_deref(), Some(cubin.as_slice()));

        std::fs::write(&path, b"LABCUBN1 damaged").unwrap();
        let again = compile_cubin(file, "", source, "sm_90", Some(&dir)).expect("compiles again");
        assert_eq!(again, cubin, "same source, same binary");
        assert_eq!(
            kernel_cache::read(&path).as_deref(),
            Some(cubin.as_slice()),
            "rebuilt"
        );

        let err = compile_cubin(file, "", "this is not CUDA", "sm_90", None).unwrap_err();
        assert!(err.to_string().contains("silu_and_mul.cu"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every file the engine loads compiles for sm_90 and for the sm_90a the engine compiles
    /// for on an H200, where NVRTC is found (ptxas checks inline assembly): a typo in a kernel fails here, on any machine with the toolkit, not at a GPU run.
    #[test]
    fn every_kernel_file_compiles_for_sm_90_and_sm_90a() {
        // SAFETY: only looks for the library; no NVRTC call.
        if !unsafe { sys::is_culib_present() } {
            eprintln!("skipped: libnvrtc was not found");
            return;
        }
        for (file, source) in crate::SOURCES {
            for arch in ["sm_90", ARCH_HOPPER_FEATURES] {
                let cubin = compile_cubin(file, "", source, arch, None)
                    .unwrap_or_else(|e| panic!("{file} for {arch}: {e}"));
                assert_eq!(&cubin[..4], b"\x7fELF", "{file} for {arch}");
            }
        }
    }

    #[test]
    fn hopper_compiles_with_its_own_features() {
        assert_eq!(arch((9, 0)), "sm_90a");
        assert_eq!(arch((10, 0)), "sm_100");
        assert_eq!(arch((8, 9)), "sm_89");
    }
}
