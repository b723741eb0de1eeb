//! What `sapo train --help` prints about the config, and the commented
//! `config.toml` of a run — both rendered from the one declaration of the
//! fields and the typed recipes, so they cannot disagree with `resolve`.

use std::fmt::Write as _;

use super::names::{Method, SapoObjective};
use super::recipes::task_recipe;
use super::{FIELDS, TrainConfig, method_defaults};

/// A set of defaults `--help` shows: a method, and SAPO once per objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The method.
    pub method: Method,
    /// SAPO's objective (`Dpo` for every other method).
    pub objective: SapoObjective,
}

impl Variant {
    /// Every method, and SAPO with `objective = "orpo"` after SAPO-DPO.
    pub fn all() -> Vec<Variant> {
        let mut variants = Vec::new();
        for method in Method::ALL {
            variants.push(Variant { method, objective: SapoObjective::Dpo });
            if method == Method::Sapo {
                variants.push(Variant { method, objective: SapoObjective::Orpo });
            }
        }
        variants
    }

    /// How `--help` names it: `dpo`, `sapo`, `sapo (objective = orpo)`.
    pub fn label(self) -> String {
        match (self.method, self.objective) {
            (Method::Sapo, SapoObjective::Orpo) => "sapo (objective = orpo)".to_string(),
            (method, _) => method.name().to_string(),
        }
    }

    /// Its defaults as TOML values by key.
    pub fn defaults(self) -> toml::Table {
        toml::Table::try_from(method_defaults(self.method, self.objective)).unwrap_or_default()
    }
}

/// A TOML value as `--help` writes it: small floats in exponent form
/// (`5e-7` and `1e-3`, not `0.0000005` and `0.001`), everything else as TOML does.
pub fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(x) if *x != 0.0 && x.abs() < 1e-2 => format!("{x:e}"),
        other => other.to_string(),
    }
}

/// The help of a field on one line.
pub fn one_line(help: &str) -> String {
    help.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The placeholder `--help` writes for the method's name in a default
/// that contains it (`runs/<method>`).
pub const METHOD_PLACEHOLDER: &str = "<method>";

/// A field's defaults over every variant: `default: V` for the most common
/// value, then `; a, b: W` for the variants whose value differs.
pub fn render_default(name: &str) -> String {
    if name == "method" {
        // What is varied: a run that names no method runs SAPO.
        return format!("default: \"{}\"", Method::Sapo.name());
    }
    let variants = Variant::all();
    let values: Vec<(Variant, String)> = variants
        .iter()
        .map(|&variant| {
            let value = variant.defaults().get(name).map_or_else(|| "(none)".to_string(), show);
            (variant, value)
        })
        .collect();
    // A value that names each variant's own method is shown once, with the placeholder.
    let templates: Vec<String> =
        values.iter().map(|(variant, value)| value.replace(variant.method.name(), METHOD_PLACEHOLDER)).collect();
    if templates.iter().all(|template| template == &templates[0]) && templates[0].contains(METHOD_PLACEHOLDER) {
        return format!("default: {}", templates[0]);
    }
    let mut distinct: Vec<(&String, Vec<String>)> = Vec::new();
    for (variant, value) in &values {
        match distinct.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, labels)) => labels.push(variant.label()),
            None => distinct.push((value, vec![variant.label()])),
        }
    }
    let common = distinct.iter().enumerate().max_by_key(|(index, (_, labels))| (labels.len(), usize::MAX - index));
    let Some((common_index, (common_value, _))) = common else { return String::new() };
    let mut text = format!("default: {common_value}");
    for (index, (value, labels)) in distinct.iter().enumerate() {
        if index != common_index {
            let _ = write!(text, "; {}: {value}", labels.join(", "));
        }
    }
    text
}

/// The field list for `sapo train --help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Config fields (TOML via --config, or --set key=value; later wins). A default that differs\n\
         between methods is listed per method; each method's comes from its own recipe.\n\n",
    );
    for field in FIELDS {
        let _ =
            writeln!(out, "  {:<28} {}\n  {:<28} {}", field.name, one_line(field.help), "", render_default(field.name));
    }
    let _ = writeln!(
        out,
        "\nWith neither --config nor a model, `sapo train` runs the method on the shipped task, with\n\
         the task's recipe for it (fixtures/task/recipes/) set over the method's defaults:"
    );
    for variant in Variant::all() {
        let _ = writeln!(out, "  {}: {}", variant.label(), task_recipe_line(variant));
    }
    out
}

/// What the shipped task's recipe for `variant` sets, as `key = value`
/// pairs separated by `, ` (`none: the method's defaults` without one).
pub fn task_recipe_line(variant: Variant) -> String {
    let table = task_recipe(variant.method, variant.objective)
        .and_then(|recipe| toml::from_str::<toml::Table>(recipe.text).ok());
    match table {
        Some(table) => {
            table.iter().map(|(key, value)| format!("{key} = {}", show(value))).collect::<Vec<_>>().join(", ")
        }
        None => "none: the method's defaults".to_string(),
    }
}

impl TrainConfig {
    /// The config as TOML, with each field's help as a comment above it.
    pub fn to_toml(&self) -> String {
        let table: toml::Table = toml::Table::try_from(self).unwrap_or_default();
        let mut out =
            String::from("# The resolved configuration of this run (`sapo train --config` this file repeats it).\n");
        for field in FIELDS {
            if let Some(value) = table.get(field.name) {
                let _ = writeln!(out, "\n# {}\n{} = {value}", one_line(field.help), field.name);
            }
        }
        out
    }
}
