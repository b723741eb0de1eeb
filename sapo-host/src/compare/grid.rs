//! The grid file: seeds, the config fields every run shares, groups, and
//! cells (a name, a group and the config fields that make the cell).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The grid `sapo compare` runs without `--grid`: the shipped comparison on
/// the task model (fixtures/compare/grid.toml).
pub const DEFAULT_GRID: &str = crate::task::shipped::COMPARE_GRID;

/// A parsed grid: every (cell, seed) pair is one `sapo train` run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// The seeds every cell runs with (config field `seed`).
    pub seeds: Vec<u64>,
    /// Config fields shared by every cell (a cell's own fields win).
    #[serde(default)]
    pub common: toml::Table,
    /// Sections of the report, in order.
    #[serde(rename = "group", default)]
    pub groups: Vec<Group>,
    /// The configurations compared.
    #[serde(rename = "cell")]
    pub cells: Vec<Cell>,
    /// The directory relative paths of the grid are relative to: the grid
    /// file's directory, or for the default grid the root of the shipped
    /// files' copy (the parent of its `fixtures/`, [`crate::task::shipped`]).
    #[serde(skip)]
    pub base: PathBuf,
}

/// Config fields that hold paths, made absolute against [`Grid::base`].
const PATH_FIELDS: &[&str] = &["model", "data", "eval_data", "oracle_model"];

/// A section of the report: a table, an accuracy-vs-steps plot and, when its
/// cells iterate, a length-vs-iteration plot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Short name, used by cells and in file names.
    pub name: String,
    /// Heading in the report.
    pub title: String,
    /// What the group tests, printed under the heading.
    #[serde(default)]
    pub about: String,
}

/// One configuration of the comparison.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// Unique name: the run directory and the config file are named after it.
    pub name: String,
    /// Row label in the report.
    pub label: String,
    /// The group ([`Group::name`]) it is reported in.
    pub group: String,
    /// Config fields of this cell, over [`Grid::common`].
    pub config: toml::Table,
}

impl Grid {
    /// Parses a grid and checks that names are unique, groups exist and
    /// there is at least one seed and one cell. `origin` names the source in errors.
    ///
    /// # Errors
    /// TOML errors and the checks above, naming `origin`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Grid> {
        let mut grid: Grid = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {}", e.message().trim()))?;
        if grid.seeds.is_empty() {
            bail!("{origin}: `seeds` is empty");
        }
        if grid.cells.is_empty() {
            bail!("{origin}: no [[cell]]");
        }
        for (index, cell) in grid.cells.iter().enumerate() {
            if cell.name.is_empty() || !cell.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                bail!("{origin}: cell {}: name `{}` must be letters, digits, `_` or `-`", index + 1, cell.name);
            }
            if grid.cells[..index].iter().any(|other| other.name == cell.name) {
                bail!("{origin}: cell name `{}` appears twice", cell.name);
            }
            if !grid.groups.iter().any(|group| group.name == cell.group) {
                bail!("{origin}: cell `{}`: group `{}` has no [[group]]", cell.name, cell.group);
            }
            for key in ["seed", "output_dir"] {
                if cell.config.contains_key(key) || grid.common.contains_key(key) {
                    bail!("{origin}: cell `{}`: `{key}` is set by sapo compare, not by the grid", cell.name);
                }
            }
        }
        grid.base = base.to_path_buf();
        Ok(grid)
    }

    /// Reads and parses `path`, or the default grid when `None`.
    ///
    /// # Errors
    /// An unreadable file, a bad grid, or (for the default grid) shipped
    /// files that cannot be written.
    pub fn load(path: Option<&Path>) -> Result<Grid> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
                let base = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                Grid::parse(&text, &path.display().to_string(), &base)
            }
            // The default grid's paths (`fixtures/task/...`) are relative to
            // the root of the shipped files' copy.
            None => {
                let fixtures = crate::task::shipped::materialise()?;
                let root = fixtures.parent().unwrap_or(&fixtures);
                Grid::parse(DEFAULT_GRID, "fixtures/compare/grid.toml", root)
            }
        }
    }

    /// Keeps only the cells named in `names` (all when empty).
    ///
    /// # Errors
    /// A name that is not a cell.
    pub fn select(&mut self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            if !self.cells.iter().any(|cell| &cell.name == name) {
                let known: Vec<&str> = self.cells.iter().map(|cell| cell.name.as_str()).collect();
                bail!("--only {name}: no such cell (the grid has {})", known.join(", "));
            }
        }
        self.cells.retain(|cell| names.contains(&cell.name));
        Ok(())
    }

    /// The config file of `cell`: the common fields, then the cell's, with
    /// relative paths made absolute against [`Grid::base`] (an empty path,
    /// such as `eval_data = ""`, stays empty).
    pub fn cell_config(&self, cell: &Cell) -> String {
        let mut table = self.common.clone();
        for (key, value) in &cell.config {
            table.insert(key.clone(), value.clone());
        }
        for key in PATH_FIELDS {
            if let Some(toml::Value::String(path)) = table.get_mut(*key)
                && !path.is_empty()
                && Path::new(path.as_str()).is_relative()
            {
                *path = self.base.join(path.as_str()).display().to_string();
            }
        }
        format!(
            "# sapo compare: cell `{}` ({}). `sapo train --config THIS --seed S --output-dir DIR` runs it.\n{}",
            cell.name,
            cell.label,
            toml::to_string(&table).unwrap_or_default()
        )
    }
}

/// Where the runs of a grid live under the output directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The output directory of `sapo compare`.
    pub root: PathBuf,
}

impl Layout {
    /// The config file of a cell.
    pub fn config_path(&self, cell: &str) -> PathBuf {
        self.root.join("configs").join(format!("{cell}.toml"))
    }

    /// The `sapo train` run directory of one cell and seed.
    pub fn run_dir(&self, cell: &str, seed: u64) -> PathBuf {
        self.root.join("runs").join(cell).join(format!("seed-{seed}"))
    }

    /// Written when a run has finished: its wall time and command.
    pub fn done_marker(&self, cell: &str, seed: u64) -> PathBuf {
        self.run_dir(cell, seed).join("compare.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_grid_parses_and_every_cell_resolves() {
        let grid = Grid::load(None).expect("default grid");
        assert!(grid.seeds.len() >= 5);
        let dir = std::env::temp_dir().join(format!("sapo-grid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for cell in &grid.cells {
            let path = dir.join(format!("{}.toml", cell.name));
            std::fs::write(&path, grid.cell_config(cell)).unwrap();
            let resolved = crate::train::config::resolve(Some(&path), &["seed=1".into()]);
            let resolved = resolved.unwrap_or_else(|e| panic!("cell {}: {e:#}", cell.name));
            assert!(resolved.data.exists(), "cell {}: {}", cell.name, resolved.data.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_grids_are_refused_with_the_reason() {
        let base = "seeds = [1]\n[[group]]\nname = \"g\"\ntitle = \"G\"\n";
        let cell = |name: &str, group: &str| {
            format!(
                "[[cell]]\nname = \"{name}\"\nlabel = \"L\"\ngroup = \"{group}\"\nconfig = {{ method = \"sft\" }}\n"
            )
        };
        let error = |text: String| Grid::parse(&text, "g.toml", Path::new(".")).unwrap_err().to_string();
        assert!(error(format!("{base}{}{}", cell("a", "g"), cell("a", "g"))).contains("appears twice"));
        assert!(error(format!("{base}{}", cell("a", "h"))).contains("group `h`"));
        assert!(error(format!("{base}{}", cell("a b", "g"))).contains("name `a b`"));
        assert!(error(base.to_string()).contains("g.toml"));
        assert!(error(format!("seeds = []\n{}{}", &base[11..], cell("a", "g"))).contains("`seeds` is empty"));
        let with_seed = format!("{base}[common]\nseed = 3\n{}", cell("a", "g"));
        assert!(error(with_seed).contains("`seed` is set by sapo compare"));
        let mut grid =
            Grid::parse(&format!("{base}{}{}", cell("a", "g"), cell("b", "g")), "g.toml", Path::new(".")).unwrap();
        assert!(grid.select(&["c".into()]).unwrap_err().to_string().contains("no such cell"));
        grid.select(&["b".into()]).unwrap();
        assert_eq!(grid.cells.len(), 1);
    }
}
