//! A scratch directory for a test, removed when the test drops it: tests that write model
//! directories or prompt files leave nothing behind in the system's temp dir.

use std::path::{Path, PathBuf};

/// A path inside a fresh directory under the system's temp dir; the directory and everything
/// in it are removed on drop. Derefs to the path, so `dir.join(..)`, `dir.to_str()` and `&dir`
/// as `&Path` work.
pub struct ScratchDir {
    _root: tempfile::TempDir,
    path: PathBuf,
}

impl ScratchDir {
    /// `<temp>/<prefix>XXXXXX/<name>`, not created: for writers that refuse an existing
    /// directory (`lab save-model`, `write_tiny_model_dir`). The prefix says whose a leftover
    /// directory was.
    pub fn child(prefix: &str, name: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("the temp dir is writable");
        let path = root.path().join(name);
        Self { _root: root, path }
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}
