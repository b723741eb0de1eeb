//! Malformed GGUF input: every truncation, corruption and absurd count is an
//! error naming the file, the byte offset and the field — never a panic,
//! never a huge allocation. Hand-built files cover each field; proptest
//! covers random bytes and random damage to a valid file.
//!
//! The proptest runs 3000 cases per property unless `PROPTEST_CASES` says
//! otherwise (a longer fuzz pass: `PROPTEST_CASES=1000000`).

use proptest::prelude::*;
use proptest::test_runner::Config;
use sapo_core::cpu::CpuBackend;
use sapo_host::model_files::gguf::{GgmlType, GgufArray, GgufError, GgufFile, GgufValue, llama, tokenizer_parts};

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/gguf/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error} (regenerate with fixtures/gguf/generate.py)"))
}

/// Writes GGUF bytes field by field, so each test can break one field.
#[derive(Default)]
struct Builder {
    bytes: Vec<u8>,
}

impl Builder {
    fn header(version: u32, n_tensors: u64, n_metadata: u64) -> Self {
        let mut builder = Builder::default();
        builder.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_metadata);
        builder
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    fn u32(&mut self, value: u32) -> &mut Self {
        self.raw(&value.to_le_bytes())
    }

    fn u64(&mut self, value: u64) -> &mut Self {
        self.raw(&value.to_le_bytes())
    }

    fn string(&mut self, text: &str) -> &mut Self {
        self.u64(text.len() as u64).raw(text.as_bytes())
    }

    /// A metadata key followed by its value type id (the value comes next).
    fn key(&mut self, key: &str, value_type: u32) -> &mut Self {
        self.string(key).u32(value_type)
    }

    fn tensor_info(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Self {
        self.string(name).u32(dims.len() as u32);
        for &dim in dims {
            self.u64(dim);
        }
        self.u32(ggml_type).u64(offset)
    }

    /// Zero padding up to a multiple of `alignment`.
    fn pad(&mut self, alignment: usize) -> &mut Self {
        while !self.bytes.len().is_multiple_of(alignment) {
            self.bytes.push(0);
        }
        self
    }

    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes("built.gguf", self.bytes.clone())
    }
}

const U32: u32 = 4;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const F32_TYPE: u32 = 0;
const Q8_0_TYPE: u32 = 8;

/// A small valid v2/v3 file: one u32 key, one 2×3 F32 tensor.
fn valid(version: u32) -> Builder {
    let mut builder = Builder::header(version, 1, 1);
    builder.key("test.answer", U32).u32(42);
    builder.tensor_info("weights", &[3, 2], F32_TYPE, 0).pad(32);
    for value in 0..6 {
        builder.raw(&(value as f32 * 0.5).to_le_bytes());
    }
    builder
}

fn expect_corrupt(result: Result<GgufFile, GgufError>, offset: u64, needle: &str) {
    match result {
        Err(GgufError::Corrupt { offset: at, what, .. }) => {
            assert_eq!(at, offset, "offset of: {what}");
            assert!(what.contains(needle), "'{what}' mentions '{needle}'");
        }
        other => panic!("expected Corrupt at {offset} mentioning '{needle}', got {other:?}"),
    }
}

fn expect_truncated(result: Result<GgufFile, GgufError>, offset: u64, needle: &str) {
    match result {
        Err(GgufError::Truncated { offset: at, what, .. }) => {
            assert_eq!(at, offset, "offset of: {what}");
            assert!(what.contains(needle), "'{what}' mentions '{needle}'");
        }
        other => panic!("expected Truncated at {offset} mentioning '{needle}', got {other:?}"),
    }
}

#[test]
fn versions_2_and_3_read_the_same_layout() {
    for version in [2, 3] {
        let file = valid(version).parse().expect("valid");
        assert_eq!(file.version(), version);
        assert_eq!(file.metadata("test.answer"), Some(&GgufValue::U32(42)));
        assert_eq!(file.data_offset(), 128); // 98 bytes of header, metadata and tensor info, padded to 32
        assert_eq!(file.tensor("weights").map(|info| info.shape()), Some(vec![2, 3]));
        assert_eq!(file.tensor_f32("weights").expect("F32"), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    }
}

#[test]
fn empty_arrays_keep_their_element_type_and_nested_arrays_nest() {
    let mut builder = Builder::header(3, 0, 2);
    builder.key("empty", ARRAY).u32(U32).u64(0);
    builder.key("nested", ARRAY).u32(ARRAY).u64(2);
    builder.u32(STRING).u64(1).string("a");
    builder.u32(U32).u64(0);
    let file = builder.parse().expect("valid");
    assert_eq!(file.metadata("empty"), Some(&GgufValue::Array(GgufArray::U32(Vec::new()))));
    let nested = GgufArray::Array(vec![GgufArray::String(vec!["a".into()]), GgufArray::U32(Vec::new())]);
    assert_eq!(file.metadata("nested"), Some(&GgufValue::Array(nested)));
}

#[test]
fn bad_magic_and_versions_are_refused() {
    let mut bytes = valid(3).bytes;
    bytes[..4].copy_from_slice(b"GGML");
    let error = GgufFile::from_bytes("model.bin", bytes).expect_err("not GGUF");
    assert!(matches!(error, GgufError::BadMagic { found, .. } if &found == b"GGML"));
    assert!(error.to_string().starts_with("model.bin: not a GGUF file"), "{error}");
    // Version 1 had 32-bit counts; a big-endian v3 file reads as version 0x03000000.
    for version in [0, 1, 4, 0x0300_0000] {
        let error = valid(version).parse().expect_err("unsupported");
        assert!(matches!(error, GgufError::UnsupportedVersion { version: v, .. } if v == version), "{error:?}");
    }
    expect_truncated(GgufFile::from_bytes("short.gguf", b"GG".to_vec()), 0, "magic");
    expect_truncated(GgufFile::from_bytes("empty.gguf", Vec::new()), 0, "magic");
}

#[test]
fn every_cut_of_a_valid_file_is_an_error_until_only_padding_is_left() {
    for name in ["tensor_types.gguf.bin", "metadata.gguf.bin", "tiny_llama.gguf.bin"] {
        let bytes = fixture_bytes(name);
        let file = GgufFile::from_bytes(name, bytes.clone()).expect("valid fixture");
        let data_end = file
            .tensors()
            .iter()
            .map(|info| file.data_offset() + info.offset() + info.byte_len().expect("known type"))
            .max()
            .unwrap_or(file.data_offset()) as usize;
        // Every cut through the header, metadata and tensor infos, and every 7th through the data.
        let cuts = (0..file.data_offset() as usize).chain((file.data_offset() as usize..bytes.len()).step_by(7));
        for cut in cuts {
            let result = GgufFile::from_bytes(name, bytes[..cut].to_vec());
            match result {
                Err(GgufError::Truncated { offset, needed, available, .. }) => {
                    assert!(needed > available, "{name} cut at {cut}: needed {needed} > available {available}");
                    assert!(offset <= bytes.len() as u64, "{name} cut at {cut}: offset {offset}");
                }
                Ok(_) => assert!(cut >= data_end, "{name} cut at {cut} < data end {data_end} parsed"),
                Err(other) => panic!("{name} cut at {cut}: expected Truncated, got {other}"),
            }
        }
    }
}

#[test]
fn truncation_error_names_path_offset_and_field() {
    let bytes = valid(3).bytes[..40].to_vec(); // inside the key "test.answer" (bytes 32 to 43)
    let error = GgufFile::from_bytes("cut.gguf", bytes).expect_err("truncated");
    assert_eq!(
        error.to_string(),
        "cut.gguf: truncated at byte 24: key length 11 in metadata entry #0 needs 11 bytes, 8 left",
        "{error:?}"
    );
}

#[test]
fn absurd_counts_and_lengths_are_refused_before_allocating() {
    // Tensor and metadata counts: u64::MAX entries of at least 24 / 13 bytes.
    expect_truncated(Builder::header(3, u64::MAX, 0).parse(), 8, "tensor count");
    expect_truncated(Builder::header(3, 0, 1 << 60).parse(), 16, "metadata count");
    // A key length of 2⁶³.
    let mut builder = Builder::header(3, 0, 1);
    builder.u64(1 << 63).raw(&[0; 16]);
    expect_truncated(builder.parse(), 24, "key length 9223372036854775808");
    // An array of 2⁶⁰ u64: count × 8 overflows, and saturates rather than wrapping to a small size.
    let mut builder = Builder::header(3, 0, 1);
    builder.key("huge", ARRAY).u32(10).u64(1 << 61);
    expect_truncated(builder.parse(), 44, "array length");
    // A string array whose count is plausible per byte but not per string (8 bytes each at least).
    let mut builder = Builder::header(3, 0, 1);
    builder.key("strings", ARRAY).u32(STRING).u64(16).raw(&[0; 64]);
    expect_truncated(builder.parse(), 47, "array length");
}

#[test]
fn unknown_value_types_bad_bools_and_bad_utf8_are_corrupt() {
    let mut builder = Builder::header(3, 0, 1);
    builder.key("odd", 13).u32(0);
    expect_corrupt(builder.parse(), 35, "unknown value type 13");
    let mut builder = Builder::header(3, 0, 1);
    builder.key("odd", ARRAY).u32(99).u64(0);
    expect_corrupt(builder.parse(), 39, "unknown array element type 99");
    let mut builder = Builder::header(3, 0, 1);
    builder.key("flag", 7).raw(&[2]);
    expect_corrupt(builder.parse(), 40, "BOOL value is 2");
    let mut builder = Builder::header(3, 0, 1);
    builder.u64(2).raw(&[0xC3, 0x28]).u32(U32).u32(0);
    expect_corrupt(builder.parse(), 24, "not UTF-8");
    let mut builder = Builder::header(3, 0, 2);
    builder.key("twice", U32).u32(1).key("twice", U32).u32(2);
    expect_corrupt(builder.parse(), 45, "appears twice");
}

#[test]
fn deeply_nested_arrays_are_refused_without_overflowing_the_stack() {
    let mut builder = Builder::header(3, 0, 1);
    builder.key("deep", ARRAY);
    for _ in 0..100_000 {
        builder.u32(ARRAY).u64(1);
    }
    let error = builder.parse().expect_err("too deep");
    assert!(matches!(&error, GgufError::Corrupt { what, .. } if what.contains("nested deeper than 16")), "{error:?}");
}

#[test]
fn bad_alignment_is_refused() {
    for alignment in [0, 3, 48] {
        let mut builder = Builder::header(3, 0, 1);
        builder.key("general.alignment", U32).u32(alignment);
        let error = builder.parse().expect_err("not a power of two");
        assert!(matches!(&error, GgufError::MetadataType { key, .. } if key == "general.alignment"), "{error:?}");
    }
    let mut builder = Builder::header(3, 0, 1);
    builder.key("general.alignment", STRING).string("32");
    assert!(builder.parse().is_err());
}

#[test]
fn bad_tensor_infos_are_corrupt() {
    let info_start = 24;
    // Five dims (ggml allows four).
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("t", &[1, 1, 1, 1, 1], F32_TYPE, 0);
    expect_corrupt(builder.parse(), info_start + 9, "5 dimensions");
    // An element count past i64::MAX.
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("t", &[1 << 40, 1 << 40], F32_TYPE, 0);
    expect_corrupt(builder.parse(), info_start + 21, "overflow");
    // A Q8_0 row of 33 values is not whole blocks of 32.
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("t", &[33], Q8_0_TYPE, 0);
    expect_corrupt(builder.parse(), info_start + 21, "not whole blocks of 32");
    // An offset that is not a multiple of the alignment.
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("t", &[4], F32_TYPE, 4);
    expect_corrupt(builder.parse(), info_start + 25, "not a multiple of 32");
    // Two tensors of one name.
    let mut builder = Builder::header(3, 2, 0);
    builder.tensor_info("t", &[4], F32_TYPE, 0).tensor_info("t", &[4], F32_TYPE, 32).pad(32).raw(&[0; 64]);
    expect_corrupt(builder.parse(), info_start + 33, "appears twice");
}

#[test]
fn tensor_data_out_of_bounds_is_truncated_data() {
    // The data would end past the file.
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("t", &[64], F32_TYPE, 0).pad(32).raw(&[0; 100]);
    expect_truncated(builder.parse(), 64, "data of tensor 't'");
    // An offset far past the file, and one that overflows when added to the data section's start.
    for offset in [1 << 40, u64::MAX - 31] {
        let mut builder = Builder::header(3, 1, 0);
        builder.tensor_info("t", &[1], F32_TYPE, offset).pad(32);
        let error = builder.parse().expect_err("out of bounds");
        assert!(
            matches!(&error, GgufError::Truncated { what, .. } if what.contains("data of tensor 't'")),
            "{error:?}"
        );
    }
}

#[test]
fn unknown_tensor_types_parse_but_cannot_be_read() {
    let mut builder = Builder::header(3, 1, 0);
    builder.tensor_info("mystery", &[7], 99, 0).pad(32);
    let file = builder.parse().expect("an unknown type is not a format error");
    assert_eq!(file.tensor("mystery").map(|info| info.ggml_type()), Some(GgmlType::Unknown(99)));
    for error in [file.tensor_f32("mystery").expect_err("unknown"), file.tensor_bytes("mystery").expect_err("unknown")]
    {
        assert!(
            matches!(&error, GgufError::UnsupportedTensorType { ggml_type: GgmlType::Unknown(99), .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("'mystery' has type unknown type id 99"), "{error}");
    }
}

#[test]
fn corrupt_model_sizes_are_config_errors_not_allocations() {
    let mut bytes = fixture_bytes("tiny_llama.gguf.bin");
    let file = GgufFile::from_bytes("tiny.gguf", bytes.clone()).expect("valid");
    assert!(llama::config(&file).is_ok());
    // Overwrite llama.block_count (a u32) with 2³² − 1 layers.
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|window| window == key).expect("key present") + key.len() + 4;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let file = GgufFile::from_bytes("tiny.gguf", bytes).expect("still parses");
    let error = llama::config(&file).expect_err("absurd layer count");
    assert!(error.to_string().contains("block_count 4294967295 but the file holds only 21 tensors"), "{error}");
}

/// Everything a caller might do with a file: none of it may panic.
fn exercise(bytes: Vec<u8>) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", bytes) else { return };
    for info in file.tensors() {
        let _ = file.tensor_f32(info.name());
    }
    let _ = tokenizer_parts(&file);
    if let Ok(config) = llama::config(&file) {
        let _ = llama::load_params(&CpuBackend::new(), &file, &config);
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(3000)
}

/// One piece of damage: a random byte, or a u64 field value that trips
/// size arithmetic (zero, one past a block, 2³², i64::MAX, u64::MAX…).
#[derive(Debug, Clone)]
enum Damage {
    Byte(u8),
    Word(u64),
}

const INTERESTING_WORDS: [u64; 12] =
    [0, 1, 2, 31, 32, 33, u32::MAX as u64, 1 << 32, 1 << 40, 1 << 62, i64::MAX as u64, u64::MAX];

/// A few pieces of damage, each at a position given as a fraction of the span damaged.
fn damage() -> impl Strategy<Value = Vec<(f64, Damage)>> {
    let one = prop_oneof![
        any::<u8>().prop_map(Damage::Byte),
        prop::sample::select(INTERESTING_WORDS.to_vec()).prop_map(Damage::Word),
    ];
    prop::collection::vec((0.0..1.0f64, one), 1..5)
}

/// Applies `damage` within the first `span` bytes.
fn apply(mut bytes: Vec<u8>, damage: &[(f64, Damage)], span: usize) -> Vec<u8> {
    for (fraction, damage) in damage {
        let index = ((fraction * span as f64) as usize).min(bytes.len() - 1);
        match damage {
            Damage::Byte(value) => bytes[index] = *value,
            Damage::Word(value) => {
                let end = (index + 8).min(bytes.len());
                bytes[index..end].copy_from_slice(&value.to_le_bytes()[..end - index]);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    #[test]
    fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512), prefix in 0usize..3) {
        // Random bytes alone rarely pass the magic; a valid prefix reaches the deeper fields.
        let mut bytes = match prefix {
            0 => Vec::new(),
            1 => b"GGUF\x03\x00\x00\x00".to_vec(),
            _ => {
                let mut header = Builder::header(3, 1, 1).bytes;
                header.truncate(24);
                header
            }
        };
        bytes.extend(tail);
        exercise(bytes);
    }

    #[test]
    fn damaged_fixtures_never_panic(
        fixture in 0usize..3,
        damage in damage(),
        everywhere in prop::bool::weighted(0.2),
        cut in prop::option::weighted(0.2, 0.0..1.0f64),
    ) {
        let name = ["tiny_llama.gguf.bin", "metadata.gguf.bin", "tensor_types.gguf.bin"][fixture];
        let bytes = fixture_bytes(name);
        // Most fields lie before the data section: aim most damage there.
        let header_len = GgufFile::from_bytes(name, bytes.clone()).expect("valid fixture").data_offset() as usize;
        let span = if everywhere { bytes.len() } else { header_len };
        let mut bytes = apply(bytes, &damage, span);
        if let Some(fraction) = cut {
            bytes.truncate((fraction * bytes.len() as f64) as usize);
        }
        exercise(bytes);
    }
}
