//! GGUF files (llama.cpp's model format, versions 2 and 3): metadata, tensor
//! infos, dequantisation to f32, and the LLaMA mapping to sapo's model.
//!
//! sapo trains in f32, so a quantised GGUF is a compact way to ship a
//! starting point: [`GgufFile::tensor_f32`] dequantises F32, F16, BF16,
//! Q8_0, Q4_0, Q4_1, Q4_K and Q6_K exactly as ggml and gguf-py do, and
//! [`llama`] renames, reshapes and un-permutes tensors into the Hugging Face
//! layout that `sapo_core::model` expects, matching transformers'
//! `from_pretrained(dir, gguf_file=...)` value for value.
//!
//! # Design
//!
//! * The file is memory-mapped; [`GgufFile::open`] parses the header,
//!   metadata and tensor infos and checks every tensor's data lies inside
//!   the file, so later reads cannot fail on bounds.
//! * Every count and length is checked against the bytes left **before**
//!   anything is allocated: a corrupt file is a [`GgufError`] naming the
//!   path, byte offset and field, never a panic or a huge allocation.
//! * Metadata values keep their stored type ([`GgufValue`]); arrays are
//!   typed vectors ([`GgufArray`]).
//!
//! # Example
//!
//! ```
//! use sapo_core::cpu::CpuBackend;
//! use sapo_host::model_files::gguf::{GgufFile, llama, tokenizer_parts};
//!
//! let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
//! assert_eq!(file.tensors().len(), 21);
//! let config = llama::config(&file)?;
//! let params = llama::load_params(&CpuBackend::new(), &file, &config)?;
//! assert!(params.lm_head.is_some()); // untied: the file has output.weight
//! let tokenizer = tokenizer_parts(&file)?;
//! assert_eq!(tokenizer.tokens.len(), config.vocab_size);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cursor;
mod dequant;
mod error;
mod file;
mod ggml_type;
pub mod llama;
mod tokenizer;
mod value;

pub use error::GgufError;
pub use file::{DEFAULT_ALIGNMENT, GgufFile, TensorInfo};
pub use ggml_type::GgmlType;
pub use tokenizer::{TokenizerParts, tokenizer_parts};
pub use value::{GgufArray, GgufValue, GgufValueType};
