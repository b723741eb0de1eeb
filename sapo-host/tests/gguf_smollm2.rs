//! The real model: SmolLM2-135M-Instruct's Q4_1 GGUF (fixtures/fetch_smollm2.sh)
//! read by sapo against transformers' own loading of the same file
//! (fixtures/gguf/generate_smollm2_goldens.py, transformers 5.23.0,
//! gguf 0.19.0). Skipped, with a message, when the file is not present.
//!
//! Tolerance: sampled entries must have the same bits (dequantisation and
//! the row un-permutation are exact); sums and sums of squares, accumulated
//! in f64 in different orders, within 1e-6 relative.

use std::path::PathBuf;
use std::time::Instant;

use sapo_core::cpu::CpuBackend;
use sapo_core::model::{LlamaConfig, tensor_specs};
use sapo_host::model_files::gguf::{GgmlType, GgufFile, llama, tokenizer_parts};
use serde_json::Value;

const MODEL: &str = "fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    let path = PathBuf::from(format!("{}/../{MODEL}", env!("CARGO_MANIFEST_DIR")));
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {MODEL} not present (run fixtures/fetch_smollm2.sh)");
        None
    }
}

fn goldens() -> Value {
    let path = format!("{}/../fixtures/gguf/smollm2_goldens.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn relative_difference(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn smollm2_file_has_the_expected_layout_and_config() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).expect("open");
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.metadata_entries().count(), 33);
    let count = |ggml_type| file.tensors().iter().filter(|info| info.ggml_type() == ggml_type).count();
    assert_eq!((count(GgmlType::Q8_0), count(GgmlType::F32), count(GgmlType::Q4_1)), (1, 61, 210));
    assert_eq!(file.tensor("token_embd.weight").map(|info| info.dims().to_vec()), Some(vec![576, 49152]));

    let config = llama::config(&file).expect("config");
    assert_eq!(config, LlamaConfig::smollm2_135m());
    let golden = &goldens()["config"];
    assert_eq!(config.rms_norm_eps, golden["rms_norm_eps"].as_f64().expect("eps") as f32);
    assert_eq!(config.rope_theta, golden["rope_theta"].as_f64().expect("theta") as f32);

    for info in file.tensors() {
        let hf = llama::hf_tensor_name(info.name()).unwrap_or_else(|| panic!("{} is mapped", info.name()));
        assert_eq!(llama::gguf_tensor_name(&hf).as_deref(), Some(info.name()));
    }
}

#[test]
fn smollm2_tensors_equal_transformers_loading() {
    let Some(path) = model_path() else { return };
    let goldens = goldens();
    let file = GgufFile::open(&path).expect("open");
    let config = llama::config(&file).expect("config");
    let specs = tensor_specs(&config);
    let (mut worst_sum, mut worst_squares, mut samples) = (0f64, 0f64, 0);
    for (name, golden) in goldens["tensors"].as_object().expect("tensors") {
        let spec = specs.iter().find(|spec| &spec.name == name).unwrap_or_else(|| panic!("{name} is a parameter"));
        let shape: Vec<usize> = serde_json::from_value(golden["shape"].clone()).expect("shape");
        assert_eq!(spec.shape, shape, "{name}");
        let values = llama::hf_tensor_f32(&file, &config, spec).unwrap_or_else(|error| panic!("{error}"));
        for sample in golden["samples"].as_array().expect("samples") {
            let (index, bits) = (sample[0].as_u64().expect("index") as usize, sample[1].as_u64().expect("bits") as u32);
            assert_eq!(
                values[index].to_bits(),
                bits,
                "{name}[{index}]: sapo {} vs transformers {}",
                values[index],
                f32::from_bits(bits)
            );
            samples += 1;
        }
        let sum: f64 = values.iter().map(|&value| f64::from(value)).sum();
        let squares: f64 = values.iter().map(|&value| f64::from(value) * f64::from(value)).sum();
        let (sum_difference, squares_difference) = (
            relative_difference(sum, golden["sum"].as_f64().expect("sum")),
            relative_difference(squares, golden["sum_of_squares"].as_f64().expect("sum of squares")),
        );
        assert!(sum_difference <= 1e-6, "{name}: sum {sum} differs by {sum_difference:e} relative");
        assert!(squares_difference <= 1e-6, "{name}: sum of squares {squares} differs by {squares_difference:e}");
        worst_sum = worst_sum.max(sum_difference);
        worst_squares = worst_squares.max(squares_difference);
    }
    println!(
        "{} tensors: {samples} sampled entries bit-identical; worst relative difference: sum {worst_sum:e}, sum of squares {worst_squares:e}",
        goldens["tensors"].as_object().map_or(0, |tensors| tensors.len())
    );
}

#[test]
fn smollm2_loads_whole_and_reports_its_load_time() {
    let Some(path) = model_path() else { return };
    let start = Instant::now();
    let file = GgufFile::open(&path).expect("open");
    let opened = start.elapsed();
    let config = llama::config(&file).expect("config");
    let mut n_values = 0;
    for spec in tensor_specs(&config) {
        n_values += llama::hf_tensor_f32(&file, &config, &spec).expect("tensor").len();
    }
    let dequantised = start.elapsed();
    assert_eq!(n_values, config.parameter_count());
    let start_params = Instant::now();
    let params = llama::load_params(&CpuBackend::new(), &file, &config).expect("params");
    let loaded = start_params.elapsed();
    assert_eq!(params.layers.len(), 30);
    assert!(params.lm_head.is_none(), "tied");
    println!(
        "open {:.1} ms; open + config + every tensor to f32 ({n_values} values) {:.0} ms; load_params onto the CPU backend {:.0} ms",
        opened.as_secs_f64() * 1e3,
        dequantised.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3,
    );
}

#[test]
fn smollm2_tokenizer_parts() {
    let Some(path) = model_path() else { return };
    let parts = tokenizer_parts(&GgufFile::open(&path).expect("open")).expect("tokenizer");
    assert_eq!((parts.model.as_str(), parts.pre.as_deref()), ("gpt2", Some("smollm")));
    assert_eq!(parts.tokens.len(), 49152);
    assert_eq!(&parts.tokens[..3], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert_eq!(parts.merges[0], "Ġ t");
    assert_eq!(parts.token_types.len(), 49152);
    assert_eq!(
        (parts.bos_token_id, parts.eos_token_id, parts.pad_token_id, parts.unk_token_id),
        (Some(1), Some(2), Some(2), Some(0))
    );
    assert_eq!((parts.add_bos_token, parts.add_eos_token), (Some(false), None));
    assert!(parts.chat_template.as_deref().is_some_and(|template| template.contains("<|im_start|>")));
}
