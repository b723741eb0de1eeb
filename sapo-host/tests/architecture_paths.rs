//! `docs/architecture.md` names files and folders by their path from the
//! repository root; each must exist, so the map cannot drift from the tree.

use std::path::Path;

/// Backticked spans that name a path from the repository root: they
/// contain a `/` and hold no spaces (the map writes every file it names in
/// full, `sapo-core/src/ema.rs`, never `ema.rs`).
fn named_paths(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).filter(|span| !span.contains(' ') && span.contains('/')).collect()
}

#[test]
fn every_path_docs_architecture_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let paths = named_paths(&text);
    assert!(paths.len() >= 40, "the map names only {} paths", paths.len());
    let missing: Vec<&str> =
        paths.iter().copied().filter(|path| !root.join(path.trim_end_matches('/')).exists()).collect();
    assert!(missing.is_empty(), "docs/architecture.md names paths that do not exist: {missing:?}");
}

#[test]
fn every_source_folder_is_on_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let paths = named_paths(&text);
    let mut unmapped = Vec::new();
    for krate in ["sapo-core/src", "sapo-cuda/src", "sapo-host/src"] {
        for entry in std::fs::read_dir(root.join(krate)).expect("crate source").flatten() {
            let name = format!("{krate}/{}", entry.file_name().to_string_lossy());
            let listed = paths.iter().any(|path| path.trim_end_matches('/') == name);
            if !listed && !name.ends_with("/lib.rs") && !name.ends_with("/main.rs") {
                unmapped.push(name);
            }
        }
    }
    assert!(unmapped.is_empty(), "docs/architecture.md does not place: {unmapped:?}");
}
