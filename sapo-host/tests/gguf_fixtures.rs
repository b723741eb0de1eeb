//! The GGUF reader against gguf-py and transformers on the small fixtures
//! that `fixtures/gguf/generate.py` writes (gguf 0.19.0, transformers 5.23.0).
//!
//! Tolerance: none. Dequantisation is a handful of f32 products and sums per
//! value, done by sapo in the same order as gguf-py with no fused
//! multiply-add, so every value must have the same bits; the goldens hold
//! bit patterns so no decimal round trip intervenes.

use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, tensor_specs};
use sapo_host::model_files::gguf::{
    GgmlType, GgufArray, GgufError, GgufFile, GgufValue, GgufValueType, llama, tokenizer_parts,
};
use serde_json::{Value, json};

fn fixture_path(name: &str) -> String {
    format!("{}/../fixtures/gguf/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn open(name: &str) -> GgufFile {
    GgufFile::open(fixture_path(name))
        .unwrap_or_else(|error| panic!("{error} (regenerate with fixtures/gguf/generate.py)"))
}

fn golden(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|value| value.to_bits()).collect()
}

fn golden_bits(value: &Value) -> Vec<u32> {
    value.as_array().expect("bits array").iter().map(|bits| bits.as_u64().expect("u32 bits") as u32).collect()
}

/// The first index where two bit patterns differ, with both values, for a
/// readable failure.
fn assert_same_bits(name: &str, actual: &[u32], expected: &[u32]) {
    assert_eq!(actual.len(), expected.len(), "{name}: element count");
    if let Some(index) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!(
            "{name}: element {index} is {} ({:#010x}), the reference says {} ({:#010x})",
            f32::from_bits(actual[index]),
            actual[index],
            f32::from_bits(expected[index]),
            expected[index]
        );
    }
}

#[test]
fn every_supported_type_dequantises_to_gguf_py_bits_across_blocks() {
    let file = open("tensor_types.gguf.bin");
    let golden = golden("tensor_types.json");
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), golden["alignment"].as_u64().expect("alignment"));
    assert_eq!(file.data_offset() % file.alignment(), 0);
    let expected_tensors = golden["tensors"].as_array().expect("tensors");
    assert_eq!(file.tensors().len(), expected_tensors.len());
    let mut types_checked = Vec::new();
    for (info, expected) in file.tensors().iter().zip(expected_tensors) {
        let name = expected["name"].as_str().expect("name");
        assert_eq!(info.name(), name);
        assert_eq!(format!("{}", info.ggml_type()), expected["type"].as_str().expect("type"), "{name}");
        let dims: Vec<u64> =
            expected["dims"].as_array().expect("dims").iter().map(|d| d.as_u64().expect("dim")).collect();
        assert_eq!(info.dims(), dims.as_slice(), "{name}: dims, innermost first");
        let shape: Vec<usize> = dims.iter().rev().map(|&dim| dim as usize).collect();
        assert_eq!(info.shape(), shape, "{name}: row-major shape");
        assert_eq!(info.offset() % file.alignment(), 0, "{name}: aligned");
        if let Some(expected_bits) = expected.get("bits") {
            let values = file.tensor_f32(name).unwrap_or_else(|error| panic!("{error}"));
            assert_same_bits(name, &bits(&values), &golden_bits(expected_bits));
            types_checked.push(info.ggml_type());
        }
    }
    use GgmlType::*;
    for ggml_type in [F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K] {
        assert!(types_checked.contains(&ggml_type), "{ggml_type} has a fixture");
    }
}

#[test]
fn unsupported_tensor_type_is_an_error_naming_tensor_and_type() {
    let file = open("tensor_types.gguf.bin");
    let error = file.tensor_f32("q5_k_unsupported").expect_err("Q5_K is not dequantised");
    assert!(
        matches!(&error, GgufError::UnsupportedTensorType { tensor, ggml_type: GgmlType::Q5_K, .. } if tensor == "q5_k_unsupported"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("tensor_types.gguf.bin") && message.contains("'q5_k_unsupported'") && message.contains("Q5_K")
    );
    // Its raw bytes are still readable: the size of every known type is known.
    assert_eq!(file.tensor_bytes("q5_k_unsupported").expect("raw bytes").len(), 176);
    assert!(matches!(file.tensor_f32("absent"), Err(GgufError::MissingTensor { .. })));
}

/// A metadata value as the JSON the generator writes: floats as bit patterns.
fn value_json(value: &GgufValue) -> Value {
    match value {
        GgufValue::U8(v) => json!(v),
        GgufValue::I8(v) => json!(v),
        GgufValue::U16(v) => json!(v),
        GgufValue::I16(v) => json!(v),
        GgufValue::U32(v) => json!(v),
        GgufValue::I32(v) => json!(v),
        GgufValue::U64(v) => json!(v),
        GgufValue::I64(v) => json!(v),
        GgufValue::F32(v) => json!({ "f32_bits": v.to_bits() }),
        GgufValue::F64(v) => json!({ "f64_bits": v.to_bits() }),
        GgufValue::Bool(v) => json!(v),
        GgufValue::String(v) => json!(v),
        GgufValue::Array(array) => array_json(array),
    }
}

fn array_json(array: &GgufArray) -> Value {
    match array {
        GgufArray::F32(values) => json!({ "f32_bits": values.iter().map(|v| v.to_bits()).collect::<Vec<_>>() }),
        GgufArray::F64(values) => json!({ "f64_bits": values.iter().map(|v| v.to_bits()).collect::<Vec<_>>() }),
        GgufArray::Array(arrays) => Value::Array(arrays.iter().map(array_json).collect()),
        other => Value::Array((0..other.len()).map(|index| value_json(&other.get(index).expect("in range"))).collect()),
    }
}

/// gguf-py's `field.types`: the type, then element types down the first elements.
fn type_path(value: &GgufValue) -> Vec<String> {
    let mut path = vec![value.value_type().name().to_string()];
    let mut array = value.as_array();
    while let Some(inner) = array {
        path.push(inner.element_type().name().to_string());
        array = match inner {
            GgufArray::Array(arrays) => arrays.first(),
            _ => None,
        };
    }
    path
}

#[test]
fn every_metadata_value_type_reads_as_gguf_py_reads_it() {
    let file = open("metadata.gguf.bin");
    let golden = golden("metadata.json");
    let expected = golden["metadata"].as_array().expect("metadata");
    let keys: Vec<&str> = file.metadata_entries().map(|(key, _)| key).collect();
    let expected_keys: Vec<&str> = expected.iter().map(|entry| entry["key"].as_str().expect("key")).collect();
    assert_eq!(keys, expected_keys, "keys in file order");
    for entry in expected {
        let key = entry["key"].as_str().expect("key");
        let value = file.metadata(key).expect("present");
        let types: Vec<String> = serde_json::from_value(entry["types"].clone()).expect("types");
        assert_eq!(type_path(value), types, "{key}: types");
        assert_eq!(value_json(value), entry["value"], "{key}: value");
    }
    let all_types: Vec<GgufValueType> = file.metadata_entries().map(|(_, value)| value.value_type()).collect();
    assert_eq!((0..13).filter(|&id| !all_types.contains(&GgufValueType::from_id(id).expect("defined"))).count(), 0);
    // The typed look-ups widen integers and refuse other types.
    assert_eq!(file.metadata_u64("test.uint8").expect("integer"), Some(200));
    assert_eq!(file.metadata_u64("test.absent").expect("absent is fine"), None);
    let error = file.metadata_u64("test.string").expect_err("not an integer");
    assert!(error.to_string().contains("metadata key 'test.string' holds STRING \"héllo, ✓ wörld\""), "{error}");
    assert!(file.metadata_u64("test.int8").is_err(), "negative");
}

fn golden_config(config: &Value) -> LlamaConfig {
    let size = |key: &str| config[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize;
    LlamaConfig {
        vocab_size: size("vocab_size"),
        hidden_size: size("hidden_size"),
        intermediate_size: size("intermediate_size"),
        num_hidden_layers: size("num_hidden_layers"),
        num_attention_heads: size("num_attention_heads"),
        num_key_value_heads: size("num_key_value_heads"),
        head_dim: size("head_dim"),
        rope_theta: config["rope_theta"].as_f64().expect("rope_theta") as f32,
        rms_norm_eps: config["rms_norm_eps"].as_f64().expect("rms_norm_eps") as f32,
        tie_word_embeddings: config["tie_word_embeddings"].as_bool().expect("tie"),
        attention_bias: false,
    }
}

#[test]
fn tiny_llama_loads_exactly_as_transformers_loads_it() {
    let file = open("tiny_llama.gguf.bin");
    let golden = golden("tiny_llama.json");
    let config = llama::config(&file).expect("config");
    assert_eq!(config, golden_config(&golden["config"]));
    assert_ne!(config.head_dim, config.hidden_size / config.num_attention_heads, "key_length is exercised");

    let backend = CpuBackend::new();
    let params = llama::load_params(&backend, &file, &config).expect("params");
    let specs = tensor_specs(&config);
    let tensors = params.tensors();
    assert_eq!(specs.len(), golden["tensors"].as_object().expect("tensors").len());
    for (spec, buffer) in specs.iter().zip(tensors) {
        let expected = &golden["tensors"][&spec.name];
        let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).expect("shape");
        assert_eq!(spec.shape, shape, "{}", spec.name);
        let values = sapo_core::backend::Backend::download(&backend, buffer).expect("download");
        assert_same_bits(&spec.name, &bits(&values), &golden_bits(&expected["bits"]));
    }
}

#[test]
fn tensor_names_map_both_ways_on_every_tensor() {
    let file = open("tiny_llama.gguf.bin");
    for info in file.tensors() {
        let hf =
            llama::hf_tensor_name(info.name()).unwrap_or_else(|| panic!("{} has a Hugging Face name", info.name()));
        assert_eq!(llama::gguf_tensor_name(&hf).as_deref(), Some(info.name()));
    }
    assert_eq!(llama::hf_tensor_name("blk.01.attn_q.weight"), None, "non-canonical layer index");
    assert_eq!(llama::gguf_tensor_name("model.layers.x.mlp.up_proj.weight"), None);
}

#[test]
fn tokenizer_parts_of_tiny_llama_are_what_the_generator_wrote() {
    let parts = tokenizer_parts(&open("tiny_llama.gguf.bin")).expect("tokenizer");
    assert_eq!(parts.model, "gpt2");
    assert_eq!(parts.pre.as_deref(), Some("default"));
    assert_eq!(parts.tokens.len(), 24);
    assert_eq!((parts.tokens[0].as_str(), parts.tokens[21].as_str()), ("t0", "<s>"));
    assert_eq!(parts.merges, ["t 0", "t 1", "t1 0"]);
    assert_eq!(parts.token_types.iter().filter(|&&kind| kind == 3).count(), 3);
    assert!(parts.scores.is_empty());
    assert_eq!(
        (parts.bos_token_id, parts.eos_token_id, parts.pad_token_id, parts.unk_token_id),
        (Some(21), Some(22), Some(23), None)
    );
    assert_eq!((parts.add_bos_token, parts.add_eos_token), (Some(true), Some(false)));
    assert_eq!(parts.chat_template.as_deref(), Some("{% for m in messages %}{{ m['content'] }}{% endfor %}"));
}

#[test]
fn config_of_another_architecture_is_an_error_naming_it() {
    let error = llama::config(&open("tensor_types.gguf.bin")).expect_err("not llama");
    assert!(matches!(&error, GgufError::UnsupportedArchitecture { architecture, .. } if architecture == "sapo-test"));
    assert!(error.to_string().contains("architecture 'sapo-test' is not supported"), "{error}");
}
