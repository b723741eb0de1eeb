//! The Hugging Face layout: loading the tiny fixtures, refusing bad files
//! with a clear error, and a save → reload round trip that is bit-identical.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use sapo_core::backend::Backend;
use sapo_core::cpu::CpuBackend;
use sapo_host::model_files::hf::{self, HfError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models").join(name)
}

/// A fresh copy of a fixture model in a temporary directory.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sapo-hf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture(name).join(file), dir.join(file)).expect("copy");
    }
    dir
}

fn host_tensors(backend: &CpuBackend, params: &sapo_core::model::LlamaParams<CpuBackend>) -> Vec<Vec<f32>> {
    params.tensors().into_iter().map(|t| backend.download(t).expect("download")).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn tiny_fixtures_load_with_their_exact_weights() {
    for name in ["tiny-llama", "tiny-llama-untied", "tiny-qwen2"] {
        let config = hf::read_config(&fixture(name)).expect("config");
        assert_eq!(config.eos_token_ids, vec![2], "{name}");
        let backend = CpuBackend::new();
        let params = hf::load_params(&backend, &fixture(name), &config.model).expect("weights");
        let bytes = std::fs::read(fixture(name).join("model.safetensors")).expect("read");
        let file = SafeTensors::deserialize(&bytes).expect("parse");
        for (spec, values) in params.tensor_specs(&config.model).iter().zip(host_tensors(&backend, &params)) {
            let expected = f32_values(file.tensor(&spec.name).expect("present").data());
            assert_eq!(values, expected, "{name}: {}", spec.name);
        }
    }
}

#[test]
fn save_then_reload_is_bit_identical() {
    let backend = CpuBackend::new();
    let config = hf::read_config(&fixture("tiny-qwen2")).expect("config");
    let params = hf::load_params(&backend, &fixture("tiny-qwen2"), &config.model).expect("weights");
    let out = std::env::temp_dir().join(format!("sapo-hf-save-{}", std::process::id()));
    hf::save(&backend, &out, &config, &params).expect("save");
    let reread = hf::read_config(&out).expect("config");
    assert_eq!(reread.model, config.model);
    let reloaded = hf::load_params(&backend, &out, &reread.model).expect("reload");
    assert_eq!(host_tensors(&backend, &reloaded), host_tensors(&backend, &params));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn truncated_weights_are_refused_naming_the_file() {
    let dir = scratch_copy("tiny-llama", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let config = hf::read_config(&dir).expect("config");
        let error = hf::load_params(&CpuBackend::new(), &dir, &config.model).expect_err("truncated");
        assert!(matches!(error, HfError::Safetensors { .. }), "cut {cut}: {error}");
        assert!(error.to_string().contains("model.safetensors"), "{error}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_shape_that_contradicts_the_config_is_refused() {
    let dir = scratch_copy("tiny-llama", "shape");
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read");
    let changed = text.replace("\"intermediate_size\": 40", "\"intermediate_size\": 48");
    assert_ne!(changed, text);
    std::fs::write(dir.join("config.json"), changed).expect("write");
    let config = hf::read_config(&dir).expect("config");
    let error = hf::load_params(&CpuBackend::new(), &dir, &config.model).expect_err("shape");
    assert!(matches!(&error, HfError::Shape { name, .. } if name.ends_with("gate_proj.weight")), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_architectures_and_missing_fields_are_refused() {
    let dir = scratch_copy("tiny-llama", "config");
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read");
    std::fs::write(dir.join("config.json"), text.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""))
        .expect("write");
    let error = hf::read_config(&dir).expect_err("unknown architecture");
    assert!(error.to_string().contains("gpt_neox"), "{error}");
    std::fs::write(dir.join("config.json"), text.replace("\"hidden_size\": 24,", "")).expect("write");
    let error = hf::read_config(&dir).expect_err("missing field");
    assert!(error.to_string().contains("hidden_size"), "{error}");
    std::fs::write(dir.join("config.json"), "{ not json").expect("write");
    assert!(matches!(hf::read_config(&dir), Err(HfError::Config { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bf16_weights_are_widened_exactly() {
    let dir = scratch_copy("tiny-llama", "bf16");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let file = SafeTensors::deserialize(&bytes).expect("parse");
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in file.tensors() {
        let halves: Vec<u8> =
            f32_values(view.data()).into_iter().flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect();
        owned.push((name, view.shape().to_vec(), halves));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::BF16, s.clone(), b).expect("view")))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).expect("serialize")).expect("write");
    let config = hf::read_config(&dir).expect("config");
    let backend = CpuBackend::new();
    let params = hf::load_params(&backend, &dir, &config.model).expect("bf16 weights");
    let embed = backend.download(&params.embed_tokens).expect("download");
    let (_, _, raw) = owned.iter().find(|(n, _, _)| n == "model.embed_tokens.weight").expect("embedding");
    let expected: Vec<f32> = raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    assert_eq!(embed, expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_weights_load_like_one_file() {
    // Split the fixture's tensors over two shards with an index, as
    // transformers' save_pretrained does for large models.
    let dir = scratch_copy("tiny-llama-untied", "sharded");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let file = SafeTensors::deserialize(&bytes).expect("parse");
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (shard, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let shard_name = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            chunk.iter().map(|name| (name.clone(), file.tensor(name).expect("present"))).collect();
        std::fs::write(dir.join(&shard_name), safetensors::serialize(views, None).expect("serialize")).expect("write");
        for name in chunk {
            weight_map.insert(name.clone(), serde_json::Value::String(shard_name.clone()));
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).expect("remove");
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("write index");
    let backend = CpuBackend::new();
    let config = hf::read_config(&dir).expect("config");
    let sharded = hf::load_params(&backend, &dir, &config.model).expect("sharded");
    let single = hf::load_params(&backend, &fixture("tiny-llama-untied"), &config.model).expect("single");
    assert_eq!(host_tensors(&backend, &sharded), host_tensors(&backend, &single));
    let _ = std::fs::remove_dir_all(dir);
}
