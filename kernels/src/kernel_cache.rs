//! Compiled kernels kept on disk between runs, keyed by everything that made them.
//!
//! NVRTC compiles each `.cu` file to machine code (a CUBIN for sm_90) at start-up: seconds for
//! the large files, most of it in the assembler (`ptxas`), on every run. The result depends
//! only on the source text, the compile options and the NVRTC version, so a run that finds a
//! CUBIN made from the same three loads it instead. The key is a hash of all three; an entry
//! carries the length and a hash of its bytes, so a truncated or damaged file is treated as
//! absent and compiled again. Writing is best effort (a read-only home only costs the
//! compile) and atomic (a temporary file renamed into place: two processes starting at once
//! both compile, and either's file is whole).
//!
//! Where: `$LAB_KERNEL_CACHE` if set (`off` or empty: no cache), else
//! `$XDG_CACHE_HOME/inference-lab/kernels`, else `$HOME/.cache/inference-lab/kernels`.

use std::path::{Path, PathBuf};

/// What an entry begins with: the format, so that a later layout never reads an older one.
const MAGIC: &[u8; 8] = b"LABCUBN1";

/// FNV-1a, 64 bits: a hash whose value is fixed by its definition (std's `DefaultHasher`
/// may change between Rust releases, which would orphan every entry).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // The length first, so ("ab", "c") and ("a", "bc") differ.
        for &b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The cache directory, or `None` when caching is off or no home is known.
pub fn dir() -> Option<PathBuf> {
    dir_from(
        std::env::var_os("LAB_KERNEL_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`dir`] from the three variables' values (a function of its inputs, for the tests).
pub fn dir_from(
    lab: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(lab) = lab {
        return (!lab.is_empty() && lab != "off").then(|| PathBuf::from(lab));
    }
    let base = match (xdg, home) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x),
        (_, Some(h)) if !h.is_empty() => PathBuf::from(h).join(".cache"),
        _ => return None,
    };
    Some(base.join("inference-lab").join("kernels"))
}

/// The entry of `file` (a kernel file's name) under `key`.
pub fn entry(dir: &Path, file: &str, key: u64) -> PathBuf {
    let stem = file.strip_suffix(".cu").unwrap_or(file);
    dir.join(format!("{stem}-{key:016x}.cubin"))
}

/// The CUBIN stored at `path`, if the file is there and whole.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let (len, body) = body.split_first_chunk::<8>()?;
    let (sum, body) = body.split_first_chunk::<8>()?;
    (u64::from_le_bytes(*len) == body.len() as u64 && u64::from_le_bytes(*sum) == fnv1a(&[body]))
        .then(|| body.to_vec())
}

/// Stores `cubin` at `path`: written beside it under a name of this process, then renamed.
pub fn write(path: &Path, cubin: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut bytes = Vec::with_capacity(24 + cubin.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(cubin.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&fnv1a(&[cubin]).to_le_bytes());
    bytes.extend_from_slice(cubin);
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn an_entry_reads_back_and_a_damaged_one_is_absent() {
        let dir = std::env::temp_dir().join(format!("lab-kernel-cache-{}", std::process::id()));
        let path = entry(&dir, "gemv.cu", 0xabc);
        assert!(path.ends_with("gemv-0000000000000abc.cubin"));
        assert_eq!(read(&path), None, "nothing written yet");
        let cubin: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        write(&path, &cubin).unwrap();
        assert_eq!(read(&path).as_deref(), Some(cubin.as_slice()));

        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 1]).unwrap(); // truncated
        assert_eq!(read(&path), None);
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1; // one bit of the code changed
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read(&path), None);
        let mut other = whole;
        other[..8].copy_from_slice(b"LABCUBN0"); // another format
        std::fs::write(&path, &other).unwrap();
        assert_eq!(read(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_changes_with_every_part_and_its_boundaries() {
        let k = fnv1a(&[b"src", b"--opt", b"13.0"]);
        assert_ne!(k, fnv1a(&[b"src ", b"--opt", b"13.0"]));
        assert_ne!(k, fnv1a(&[b"src", b"--opt", b"13.1"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        // Fixed by definition: the same value on every machine and Rust release.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(k, fnv1a(&[b"src", b"--opt", b"13.0"]));
    }

    #[test]
    fn the_directory_follows_the_variables() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            dir_from(os("/c"), os("/x"), os("/h")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(dir_from(os("off"), os("/x"), os("/h")), None);
        assert_eq!(dir_from(os(""), None, os("/h")), None);
        assert_eq!(
            dir_from(None, os("/x"), os("/h")),
            Some(PathBuf::from("/x/inference-lab/kernels"))
        );
        assert_eq!(
            dir_from(None, None, os("/h")),
            Some(PathBuf::from("/h/.cache/inference-lab/kernels"))
        );
        assert_eq!(dir_from(None, None, None), None);
    }
}
