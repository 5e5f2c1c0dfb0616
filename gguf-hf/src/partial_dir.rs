//! Writing a directory all-or-nothing.
//!
//! A conversion writes half a gigabyte; it can be killed or fail at any point. If it wrote
//! straight into `models/SmolLM2-135M-Instruct`, a later run would find a directory that looks
//! like a model but isn't. Instead we fill a hidden sibling, `.SmolLM2-135M-Instruct.partial-PID`,
//! and rename it into place at the very end: a rename within one directory is atomic, so the
//! model directory either does not exist or is complete.
//!
//! A failed run deletes its partial directory (on drop); a *killed* run cannot, so the next run
//! sweeps away partial directories whose process is gone.

use std::io;
use std::path::{Path, PathBuf};

/// A hidden work directory that is deleted when dropped, unless [`PartialDir::persist`]ed.
pub struct PartialDir {
    path: Option<PathBuf>,
}

impl PartialDir {
    /// Creates `<parent>/.<name>.partial-<our pid>`, first removing leftovers of dead runs.
    pub fn create(parent: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        remove_stale(parent, name);
        let path = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?; // left by an earlier process with our pid
        }
        std::fs::create_dir(&path)?;
        Ok(Self { path: Some(path) })
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the directory to `dest` and keeps it.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        if let Some(path) = &self.path {
            std::fs::rename(path, dest)?;
            self.path = None;
        }
        Ok(())
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Removes `.<name>.partial-<pid>` directories in `parent` whose process no longer runs.
fn remove_stale(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix)?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !is_running(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` exists. Only Linux lists processes under `/proc`; elsewhere we say
/// yes, which keeps a stale directory rather than deleting a live one.
fn is_running(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_or_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PartialDir::create(tmp.path(), "m").unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        dir.persist(&tmp.path().join("m")).unwrap();
        assert!(tmp.path().join("m/f").is_file());

        let dir = PartialDir::create(tmp.path(), "n").unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn sweeps_dead_runs_only() {
        let tmp = tempfile::tempdir().unwrap();
        // u32::MAX is above any real pid limit, so that "process" is surely gone.
        let dead = tmp.path().join(format!(".m.partial-{}", u32::MAX));
        let other = tmp.path().join(".other.partial-1");
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&other).unwrap();
        let _dir = PartialDir::create(tmp.path(), "m").unwrap();
        assert_eq!(dead.exists(), !Path::new("/proc/self").exists());
        assert!(
            other.exists(),
            "another model's directory is not ours to sweep"
        );
    }
}
