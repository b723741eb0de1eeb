//! Writing a whole file atomically: readers, and a later run after a crash,
//! see either the previous file or the new one, never a half-written mix.
//!
//! Models, tokenizers, run configs, samples, cached reference log-probs and
//! the comparison grid's configs, done markers and reports are all saved
//! this way. Writing over the file in place would leave a truncated file if
//! the process were killed or the machine lost power mid-save, and a run
//! resumed from it would fail, or worse, read garbage. Instead the bytes go
//! to a temporary file in the same directory, which is flushed to disk and
//! then renamed over the target: a rename within one file system replaces
//! the name in one step.
//!
//! # Example
//!
//! ```
//! use sapo_host::atomic_file::write_atomically;
//!
//! let dir = std::env::temp_dir().join(format!("sapo-atomic-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("config.toml");
//! write_atomically(&path, b"seed = 1\n")?;
//! write_atomically(&path, b"seed = 2\n")?;
//! assert_eq!(std::fs::read_to_string(&path)?, "seed = 2\n");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an atomic write failed: the file or directory the failing step
/// touched, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct AtomicWriteError {
    /// The temporary file, the target, or its directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> AtomicWriteError + '_ {
    move |source| AtomicWriteError { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (`.NAME.tmp`): write, fsync, rename over `path`, fsync of the directory
/// so the rename itself survives a power loss.
///
/// The directory must exist. Two writers of the same `path` at once share
/// the temporary name, so callers write each file from one place.
///
/// # Errors
/// [`AtomicWriteError`] naming the file or directory whose step failed; if
/// the write or the rename fails, the previous `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut file = File::create(&temporary).map_err(at(&temporary))?;
    file.write_all(bytes).map_err(at(&temporary))?;
    file.sync_all().map_err(at(&temporary))?;
    std::fs::rename(&temporary, path).map_err(at(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory for one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sapo-atomic-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomically_creates_then_replaces_and_leaves_no_temporary_file() {
        let dir = scratch_dir("replace");
        let path = dir.join("model.safetensors");
        write_atomically(&path, b"first version").expect("first write");
        assert_eq!(std::fs::read(&path).expect("read"), b"first version");
        write_atomically(&path, b"second").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        assert_eq!(file_names(&dir), ["model.safetensors"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn write_atomically_names_the_path_when_the_directory_is_missing() {
        let dir = scratch_dir("missing");
        let path = dir.join("absent").join("config.json");
        let error = write_atomically(&path, b"{}").expect_err("no directory");
        assert_eq!(error.path, dir.join("absent").join(".config.json.tmp"));
        assert_eq!(error.source.kind(), std::io::ErrorKind::NotFound);
        assert!(error.to_string().contains(".config.json.tmp"), "{error}");
        assert!(file_names(&dir).is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
