//! # sapo-host
//!
//! Everything of sapo that touches the world: model files (Hugging Face
//! safetensors layout and GGUF), tokenizers and chat templates, datasets,
//! and the `sapo` command built on them. The maths lives in `sapo-core`.

pub mod atomic_file;
pub mod chat_template;
pub mod compare;
pub mod data;
pub mod gguf;
pub mod hf;
pub mod model_files;
pub mod plot;
pub mod task;
pub mod tokenizer;
pub mod train;
pub mod verify;
