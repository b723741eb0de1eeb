use super::help::{METHOD_PLACEHOLDER, Variant, help_text};
use super::*;

#[test]
fn every_field_has_a_default_and_help_entry() {
    for method in Method::ALL {
        let config = method_defaults(method, SapoObjective::Dpo);
        assert_eq!(config.method, method);
        let table = toml::Table::try_from(&config).expect("defaults serialise");
        for key in table.keys() {
            assert!(FIELDS.iter().any(|field| field.name == key), "{key} has no help entry");
        }
        assert_eq!(table.len(), FIELDS.len());
        assert!(FIELDS.iter().all(|field| !field.help.trim().is_empty()));
    }
}

#[test]
fn overrides_apply_in_order_and_sapo_orpo_gets_its_recipe() {
    let model = || "model=some/model".to_string();
    let config = resolve(None, &[model(), "objective=orpo".into(), "learning_rate=1e-5".into()]).expect("valid");
    assert_eq!(config.objective, SapoObjective::Orpo);
    assert_eq!(config.learning_rate, 1e-5);
    assert_eq!(config.lr_scheduler_type, sapo_core::optim::ScheduleKind::InverseSqrt);
    assert_eq!((config.warmup_steps, config.beta), (100, 0.05));
    let config = resolve(None, &[model(), "method=dpo".into(), "beta=1".into()]).expect("integer as float");
    assert_eq!((config.method, config.beta, config.optimizer), (Method::Dpo, 1.0, OptimizerName::Adamw));
}

#[test]
fn bad_keys_and_values_name_themselves() {
    let error = resolve(None, &["learning_rat=1".into()]).unwrap_err().to_string();
    assert!(error.contains("unknown config key `learning_rat`") && error.contains("learning_rate"), "{error}");
    let error = resolve(None, &["optimizer=sgd".into()]).unwrap_err().to_string();
    assert!(error.contains("--set optimizer=sgd") && error.contains("optimizer"), "{error}");
    let error = resolve(None, &["top_p=2".into()]).unwrap_err().to_string();
    assert!(error.contains("top_p") && error.contains("(0, 1]"), "{error}");
    let error = resolve(None, &["method=sppx".into()]).unwrap_err().to_string();
    assert!(error.contains("sppx"), "{error}");
}

#[test]
fn objective_and_optimizer_ranges_are_sapo_cores() {
    let error = resolve(None, &["method=dpo".into(), "beta=0".into()]).unwrap_err().to_string();
    assert!(error.contains("--set beta=0") && error.contains("β must be positive"), "{error}");
    // ORPO's λ may be 0 (the NLL alone).
    resolve(None, &["method=orpo".into(), "beta=0".into()]).expect("λ = 0 is ORPO's NLL alone");
    resolve(None, &["method=dpo".into(), "label_smoothing=0.5".into()]).expect("ε = 0.5 is in [0, 0.5]");
    let error = resolve(None, &["method=dpo".into(), "label_smoothing=0.6".into()]).unwrap_err().to_string();
    assert!(error.contains("label_smoothing") && error.contains("[0, 0.5]"), "{error}");
    let error = resolve(None, &["method=aipo".into(), "aipo_lambda=-1".into()]).unwrap_err().to_string();
    assert!(error.contains("`aipo_lambda`"), "{error}");
    let error = resolve(None, &["method=dpo".into(), "adam_beta2=1".into()]).unwrap_err().to_string();
    assert!(error.contains("`adam_beta2`") && error.contains("[0, 1)"), "{error}");
}

#[test]
fn no_file_and_no_model_runs_the_shipped_task_recipe_for_sapo_only() {
    let config = resolve(None, &[]).expect("the embedded recipe resolves");
    assert_eq!((config.method, config.objective), (Method::Sapo, SapoObjective::Dpo));
    assert!(config.model.ends_with("fixtures/task/model"), "{}", config.model.display());
    assert_eq!(config.max_steps, 376);
    let config = resolve(None, &["model=m".into()]).expect("authors' defaults");
    assert_eq!((config.learning_rate, config.max_steps), (5e-7, 0));
    // Another method never inherits SAPO's task recipe: it gets its own, or none.
    let config = resolve(None, &["method=dpo".into()]).expect("DPO's task recipe");
    assert_eq!(
        (config.optimizer, config.learning_rate, config.ref_update),
        (OptimizerName::Adamw, 1e-5, RefUpdate::Ema)
    );
    let config = resolve(None, &["method=ipo".into()]).expect("IPO's defaults");
    assert_eq!(config, method_defaults(Method::Ipo, SapoObjective::Dpo));
    let config = resolve(None, &["objective=orpo".into()]).expect("SAPO-ORPO's task recipe");
    assert_eq!((config.optimizer, config.learning_rate), (OptimizerName::Adamw, 1e-3));
    assert_eq!(config.lr_scheduler_type, sapo_core::optim::ScheduleKind::InverseSqrt);
}

#[test]
fn derived_limits_follow_what_the_user_set() {
    let config = resolve(None, &["method=ipo".into(), "max_length=128".into()]).expect("prompt limit derived");
    assert_eq!(config.max_prompt_length, 112);
    let config =
        resolve(None, &["method=ipo".into(), "max_length=128".into(), "max_prompt_length=64".into()]).expect("set");
    assert_eq!(config.max_prompt_length, 64);
    let error = resolve(None, &["method=ipo".into(), "max_length=128".into(), "max_prompt_length=128".into()])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("--set max_prompt_length=128"), "{error}");
}

#[test]
fn resolved_config_round_trips_through_its_toml() {
    let config = resolve(None, &["method=spin".into(), "segment_len=0".into()]).expect("valid");
    let text = config.to_toml();
    let again: TrainConfig = toml::from_str(&text).expect("written config parses");
    assert_eq!(again, config);
}

/// The `default:` line `--help` prints under `name`.
fn printed_default<'a>(help: &'a str, name: &str) -> &'a str {
    let mut lines = help.lines();
    while let Some(line) = lines.next() {
        if line.split_whitespace().next() == Some(name) && line.starts_with("  ") {
            let next = lines.next().expect("a default line follows");
            return next.trim().strip_prefix("default: ").expect("a default line");
        }
    }
    panic!("{name} is not in --help");
}

fn toml_value(text: &str) -> toml::Value {
    let mut table: toml::Table = toml::from_str(&format!("v = {text}")).unwrap_or_else(|e| panic!("{text}: {e}"));
    table.remove("v").expect("v")
}

/// The value `--help` says `variant` gets for a field.
fn printed_value(printed: &str, variant: Variant) -> toml::Value {
    let mut parts = printed.split("; ");
    let common = parts.next().expect("a common value");
    for part in parts {
        let (labels, value) = part.split_once(": ").expect("labels: value");
        if labels.split(", ").any(|label| label == variant.label()) {
            return toml_value(value);
        }
    }
    toml_value(&common.replace(METHOD_PLACEHOLDER, variant.method.name()))
}

#[test]
fn help_prints_the_defaults_resolve_gives_for_every_method() {
    let help = help_text();
    for variant in Variant::all() {
        let mut overrides = vec![format!("method={}", variant.method.name())];
        if variant.objective == SapoObjective::Orpo {
            overrides.push("objective=orpo".into());
        }
        // Naming the default model keeps the shipped task's recipe out: the
        // fields' own defaults are what is checked here.
        let defaults = Variant::defaults(variant);
        let model = defaults["model"].as_str().expect("model path").to_string();
        overrides.push(format!("model={model:?}"));
        let resolved = toml::Table::try_from(resolve(None, &overrides).expect("defaults resolve")).expect("toml");
        for field in FIELDS.iter().filter(|field| field.name != "method") {
            let printed = printed_value(printed_default(&help, field.name), variant);
            assert_eq!(printed, resolved[field.name], "{} for {}", field.name, variant.label());
        }
        assert_eq!(resolved["method"].as_str(), Some(variant.method.name()));
    }
    assert_eq!(printed_value(printed_default(&help, "method"), Variant::all()[0]).as_str(), Some("sapo"));
}

/// The `key = value` pairs `--help` lists for `variant`'s task recipe.
fn printed_task_recipe(help: &str, variant: Variant) -> Option<toml::Table> {
    let prefix = format!("  {}: ", variant.label());
    let section = help.split("With neither --config nor a model").nth(1).expect("the task section");
    let line = section.lines().find_map(|line| line.strip_prefix(&prefix)).expect("a line per method");
    if line.starts_with("none") {
        return None;
    }
    Some(
        line.split(", ")
            .map(|pair| pair.split_once(" = ").expect("key = value"))
            .map(|(k, v)| (k.to_string(), toml_value(v)))
            .collect(),
    )
}

#[test]
fn help_prints_the_task_recipe_resolve_layers_for_every_method() {
    let help = help_text();
    for variant in Variant::all() {
        // No model named: the shipped task, with the method's recipe if it has one.
        let mut overrides = Vec::new();
        if variant.method != Method::Sapo {
            overrides.push(format!("method={}", variant.method.name()));
        }
        if variant.objective == SapoObjective::Orpo {
            overrides.push("objective=orpo".into());
        }
        let resolved = toml::Table::try_from(resolve(None, &overrides).expect("task run resolves")).expect("toml");
        let recipe = printed_task_recipe(&help, variant);
        assert_eq!(recipe.is_some(), !matches!(variant.method, Method::Ipo | Method::Hinge), "{}", variant.label());
        if let Some(recipe) = &recipe {
            assert_eq!(recipe.get("method").and_then(toml::Value::as_str), Some(variant.method.name()));
        }
        for field in FIELDS {
            let expected = match recipe.as_ref().and_then(|recipe| recipe.get(field.name)) {
                Some(value) => coerce(field.name, value),
                None if field.name == "method" => toml::Value::String(variant.method.name().into()),
                None => printed_value(printed_default(&help, field.name), variant),
            };
            assert_eq!(expected, resolved[field.name], "{} of {} on the task", field.name, variant.label());
        }
    }
}
