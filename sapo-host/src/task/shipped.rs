//! The shipped task's files inside the binary, written out on first use, so
//! that an installed `sapo` runs its defaults without the source tree.
//!
//! `sapo train` (no config), `sapo eval`, `sapo verify` and `sapo compare`
//! (no grid) default to the task model and data. The binary embeds exactly
//! the files those defaults read ([`FILES`]), and [`materialise`] writes them
//! once per content as a small `fixtures/` tree:
//!
//! ```text
//! <base>/shipped-<version>-<hash>/fixtures/task/model/model.safetensors
//!                                 fixtures/task/data/{train,eval,sft}.jsonl
//!                                 fixtures/task/recipes/*.toml, fixtures/compare/grid.toml
//! ```
//!
//! where `<base>` is `$SAPO_HOME`, else `$XDG_CACHE_HOME/sapo`, else
//! `$HOME/.cache/sapo`, else `<system temp dir>/sapo` ([`base_dir`]), and
//! `<hash>` is the FNV-1a hash of the embedded paths and bytes, so a binary
//! with other files never reuses this copy.
//!
//! The copy is written into a fresh sibling directory and renamed into place,
//! so a reader never sees half a tree: a process that loses the race to
//! rename uses the winner's copy. An existing copy is reused only if its
//! manifest (written last) matches and every file has its embedded size; a
//! copy that fails the check (an interrupted write, a cleaner that deleted
//! files) is moved aside and replaced.
//!
//! **Architecture Invariant**: the embedded bytes are the source tree's
//! `fixtures/` files (`include_bytes!`), so a run from an installed binary
//! gives the results of the same run from a clone.
//!
//! ```no_run
//! let fixtures = sapo_host::task::shipped::materialise()?;
//! assert!(fixtures.join("task/model/model.safetensors").is_file());
//! # anyhow::Ok(())
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// The grid `sapo compare` runs without `--grid` (`fixtures/compare/grid.toml`).
pub const COMPARE_GRID: &str = include_str!("../../../fixtures/compare/grid.toml");

/// One embedded file: its path under `fixtures/` and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct ShippedFile {
    /// The path under `fixtures/`, `/`-separated.
    pub path: &'static str,
    /// The file's bytes, as in the source tree.
    pub bytes: &'static [u8],
}

/// `ShippedFile`s for paths under `fixtures/`, embedded from the source tree.
macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(ShippedFile { path: $path, bytes: include_bytes!(concat!("../../../fixtures/", $path)) }),*]
    };
}

/// Every file the defaults read. The model and the three data splits are
/// what `sapo train`, `sapo eval`, `sapo verify` and the default grid use
/// (`sft.jsonl` is SFT's); each method's task recipe ([`task_recipe`]) and
/// the grid ([`COMPARE_GRID`]) are read as text and also written, so the
/// tree can be passed back as `--config` or `--grid`. Not shipped: the
/// model's SFT recipe (`task/sft.toml`) and its base (`task/base/`), and the
/// learning-rate sweep (`compare/lr_sweep.toml`), which no default reads.
pub const FILES: &[ShippedFile] = embedded![
    "task/model/config.json",
    "task/model/model.safetensors",
    "task/model/tokenizer.json",
    "task/model/tokenizer_config.json",
    "task/model/chat_template.jinja",
    "task/data/train.jsonl",
    "task/data/eval.jsonl",
    "task/data/sft.jsonl",
    "task/recipes/sapo.toml",
    "task/recipes/sapo_orpo.toml",
    "task/recipes/sft.toml",
    "task/recipes/dpo.toml",
    "task/recipes/orpo.toml",
    "task/recipes/spin.toml",
    "task/recipes/sppo.toml",
    "task/recipes/sppo_hard.toml",
    "task/recipes/aipo.toml",
    "compare/grid.toml",
];

/// The shipped task's recipe `name` (`fixtures/task/recipes/<name>.toml`):
/// what `sapo train` layers over a method's defaults when it runs that
/// method on the shipped task with neither a config file nor a model.
/// `None` for a method the comparison grid did not tune (IPO, hinge).
///
/// ```
/// let recipe = sapo_host::task::shipped::task_recipe("sapo").expect("the main job's recipe");
/// assert!(recipe.contains("method = \"sapo\""));
/// assert!(sapo_host::task::shipped::task_recipe("ipo").is_none());
/// ```
pub fn task_recipe(name: &str) -> Option<&'static str> {
    let path = format!("task/recipes/{name}.toml");
    FILES.iter().find(|file| file.path == path).and_then(|file| std::str::from_utf8(file.bytes).ok())
}

/// The file beside `fixtures/` that says the copy is complete: the manifest
/// ([`manifest`]), written after every other file.
const MARKER: &str = "complete";

/// FNV-1a (64-bit) of every file's path, length and bytes: stable across
/// builds and Rust versions, unlike `DefaultHasher`, and enough to tell
/// apart the contents of two sapo builds (nothing here is adversarial).
fn content_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for file in FILES {
            feed(file.path.as_bytes());
            feed(&(file.bytes.len() as u64).to_le_bytes());
            feed(file.bytes);
        }
        hash
    })
}

/// The name of the copy's directory under the base: `shipped-<version>-<hash>`.
pub fn dir_name() -> String {
    format!("shipped-{}-{:016x}", env!("CARGO_PKG_VERSION"), content_hash())
}

/// The marker's text: one `<size> <path>` line per file, then the hash.
fn manifest() -> String {
    let mut text: String = FILES.iter().map(|file| format!("{} {}\n", file.bytes.len(), file.path)).collect();
    text.push_str(&format!("fnv1a64 {:016x}\n", content_hash()));
    text
}

/// Where copies go: `$SAPO_HOME`, else `$XDG_CACHE_HOME/sapo` (an absolute
/// path, as the XDG spec requires), else `$HOME/.cache/sapo`, else the system
/// temp dir's `sapo`. Empty variables count as unset. A relative
/// `$SAPO_HOME` is taken from the current directory.
pub fn base_dir() -> PathBuf {
    let base = base_dir_from(|key| std::env::var_os(key));
    // `absolute` fails only without a current directory; the relative path
    // is then the best there is.
    std::path::absolute(&base).unwrap_or(base)
}

fn base_dir_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |key: &str| var(key).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(home) = set("SAPO_HOME") {
        return home;
    }
    if let Some(cache) = set("XDG_CACHE_HOME").filter(|path| path.is_absolute()) {
        return cache.join("sapo");
    }
    if let Some(home) = set("HOME") {
        return home.join(".cache").join("sapo");
    }
    std::env::temp_dir().join("sapo")
}

/// The `fixtures/` directory of this binary's copy under [`base_dir`],
/// whether or not it has been written yet (no I/O).
pub fn fixtures_path() -> PathBuf {
    base_dir().join(dir_name()).join("fixtures")
}

/// Writes the copy under [`base_dir`] if it is missing or incomplete, and
/// returns its `fixtures/` directory. Later calls in the process return the
/// same path without checking again.
///
/// # Errors
/// A directory or file that cannot be created or written, named in the error.
pub fn materialise() -> Result<PathBuf> {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    if let Some(fixtures) = DONE.get() {
        return Ok(fixtures.clone());
    }
    let fixtures = materialise_in(&base_dir())?;
    Ok(DONE.get_or_init(|| fixtures).clone())
}

/// [`materialise`] when any of `paths` lies inside this binary's copy (the
/// defaults, or a path a user copied from them); nothing otherwise, so runs
/// that name their own files never need a writable cache.
///
/// # Errors
/// As [`materialise`].
pub fn materialise_for(paths: &[&Path]) -> Result<()> {
    let root = base_dir().join(dir_name());
    if paths.iter().any(|path| path.starts_with(&root)) {
        materialise()?;
    }
    Ok(())
}

/// Writes the copy under `base` (see the module docs) if it is missing or
/// incomplete, and returns its `fixtures/` directory.
///
/// # Errors
/// A directory or file that cannot be created or written, named in the error.
pub fn materialise_in(base: &Path) -> Result<PathBuf> {
    let root = base.join(dir_name());
    if is_complete(&root) {
        return Ok(root.join("fixtures"));
    }
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let staging = sibling(base, "writing");
    if let Err(error) = write_tree(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    install(base, &staging, &root)?;
    Ok(root.join("fixtures"))
}

/// Whether `root` holds a complete copy: the manifest matches and every
/// file has its embedded size (a cheap check that catches truncated and
/// deleted files without reading 3 MB).
fn is_complete(root: &Path) -> bool {
    let manifest_matches = std::fs::read_to_string(root.join(MARKER)).is_ok_and(|text| text == manifest());
    manifest_matches
        && FILES.iter().all(|file| {
            std::fs::metadata(root.join("fixtures").join(file.path))
                .is_ok_and(|meta| meta.is_file() && meta.len() == file.bytes.len() as u64)
        })
}

/// A fresh, unused name beside the copy: `.<dir_name>.<purpose>-<pid>-<n>`.
fn sibling(base: &Path, purpose: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    base.join(format!(".{}.{purpose}-{}-{nanos}-{n}", dir_name(), std::process::id()))
}

/// Writes every file under `staging/fixtures/`, then the marker.
fn write_tree(staging: &Path) -> Result<()> {
    std::fs::create_dir(staging).with_context(|| format!("creating {}", staging.display()))?;
    for file in FILES {
        let path = staging.join("fixtures").join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        write_synced(&path, file.bytes)?;
    }
    write_synced(&staging.join(MARKER), manifest().as_bytes())
}

/// Writes `bytes` to a new file at `path` and waits until they are on disk,
/// so the marker never reaches the disk before the files it vouches for.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}

/// Renames the finished `staging` to `root`. If `root` exists and is
/// complete, another process won the race: its copy is used and `staging`
/// removed. If it exists and is incomplete, it is moved aside, removed, and
/// the rename tried once more.
fn install(base: &Path, staging: &Path, root: &Path) -> Result<()> {
    let mut replaced_stale = false;
    loop {
        let error = match std::fs::rename(staging, root) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if is_complete(root) {
            let _ = std::fs::remove_dir_all(staging);
            return Ok(());
        }
        if replaced_stale || !root.exists() {
            let _ = std::fs::remove_dir_all(staging);
            return Err(error).with_context(|| format!("moving {} to {}", staging.display(), root.display()));
        }
        // Another process may move it aside first; either way it is gone.
        let stale = sibling(base, "stale");
        if std::fs::rename(root, &stale).is_ok() {
            let _ = std::fs::remove_dir_all(&stale);
        }
        replaced_stale = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory for `name` under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sapo-shipped-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn source_fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fixtures")
    }

    fn assert_same_as_source(fixtures: &Path) {
        for file in FILES {
            let written = std::fs::read(fixtures.join(file.path)).unwrap();
            let source = std::fs::read(source_fixtures().join(file.path)).unwrap();
            assert!(written == source, "{} differs from the source tree", file.path);
        }
    }

    #[test]
    fn a_fresh_base_gets_the_source_trees_files() {
        let top = scratch("fresh");
        let base = top.join("not/yet/there");
        let fixtures = materialise_in(&base).unwrap();
        assert_eq!(fixtures, base.join(dir_name()).join("fixtures"));
        assert!(fixtures.join("task/model").is_dir() && fixtures.ends_with("fixtures"));
        assert_same_as_source(&fixtures);
        // Only the copy is left: no staging directory.
        let entries: Vec<_> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![OsString::from(dir_name())]);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_complete_copy_is_reused_without_rewriting() {
        let base = scratch("reuse");
        let fixtures = materialise_in(&base).unwrap();
        // A file the copy does not own survives a second call, so the
        // directory was not replaced.
        std::fs::write(fixtures.join("note"), "kept").unwrap();
        assert_eq!(materialise_in(&base).unwrap(), fixtures);
        assert_eq!(std::fs::read_to_string(fixtures.join("note")).unwrap(), "kept");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_incomplete_copy_is_replaced() {
        let base = scratch("incomplete");
        let fixtures = materialise_in(&base).unwrap();
        let root = fixtures.parent().unwrap().to_path_buf();
        // What can leave a copy incomplete, as a description and an action on its root.
        type Damage = (&'static str, fn(&Path));
        let damages: [Damage; 3] = [
            ("a truncated file", |root| {
                std::fs::write(root.join("fixtures/task/model/model.safetensors"), b"cut").unwrap()
            }),
            ("a deleted file", |root| std::fs::remove_file(root.join("fixtures/task/data/eval.jsonl")).unwrap()),
            ("no marker (an interrupted write)", |root| std::fs::remove_file(root.join(MARKER)).unwrap()),
        ];
        for (damage, apply) in damages {
            std::fs::write(fixtures.join("note"), "stale").unwrap();
            apply(&root);
            assert!(!is_complete(&root), "{damage}: still counted complete");
            assert_eq!(materialise_in(&base).unwrap(), fixtures, "{damage}");
            assert!(is_complete(&root), "{damage}: not repaired");
            assert!(!fixtures.join("note").exists(), "{damage}: the old directory was kept");
            assert_same_as_source(&fixtures);
        }
        let entries = std::fs::read_dir(&base).unwrap().count();
        assert_eq!(entries, 1, "staging or stale directories left behind");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn concurrent_writers_end_with_one_complete_copy() {
        let base = scratch("race");
        let results: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| materialise_in(&base).unwrap())).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        assert!(results.iter().all(|fixtures| fixtures == &results[0]));
        assert_same_as_source(&results[0]);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1, "staging directories left behind");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_unwritable_base_is_an_error_naming_it() {
        let blocker = scratch("unwritable");
        std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
        std::fs::write(&blocker, "a file, not a directory").unwrap();
        let error = format!("{:#}", materialise_in(&blocker.join("base")).unwrap_err());
        assert!(error.contains(&blocker.display().to_string()), "{error}");
        std::fs::remove_file(&blocker).unwrap();
    }

    /// A stand-in for `std::env::var_os` that knows only `pairs`.
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| pairs.iter().find(|(name, _)| *name == key).map(|(_, value)| OsString::from(value))
    }

    #[test]
    fn the_base_follows_sapo_home_then_xdg_then_home() {
        let all = [("SAPO_HOME", "/s"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(base_dir_from(env(&all)), PathBuf::from("/s"));
        assert_eq!(base_dir_from(env(&all[1..])), PathBuf::from("/x/sapo"));
        // Empty counts as unset, and a relative XDG_CACHE_HOME is ignored.
        let unusable = [("SAPO_HOME", ""), ("XDG_CACHE_HOME", "relative"), ("HOME", "/h")];
        assert_eq!(base_dir_from(env(&unusable)), PathBuf::from("/h/.cache/sapo"));
        assert_eq!(base_dir_from(env(&[])), std::env::temp_dir().join("sapo"));
    }

    #[test]
    fn resolving_the_defaults_writes_the_files_they_name() {
        // The real base (the user's cache unless SAPO_HOME is set), as the
        // binary would use it.
        let config = crate::train::config::resolve(None, &[]).unwrap();
        assert!(config.model.starts_with(base_dir().join(dir_name())), "{}", config.model.display());
        assert!(config.model.join("model.safetensors").is_file(), "{}", config.model.display());
        assert!(config.data.is_file() && config.eval_data.is_file(), "{}", config.data.display());
    }

    #[test]
    fn the_recipes_and_grid_text_are_the_embedded_files() {
        let text = |path: &str| FILES.iter().find(|file| file.path == path).unwrap().bytes;
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/task/recipes/sapo.toml");
        assert_eq!(task_recipe("sapo").unwrap().as_bytes(), std::fs::read(source).unwrap());
        assert_eq!(text("compare/grid.toml"), COMPARE_GRID.as_bytes());
    }
}
