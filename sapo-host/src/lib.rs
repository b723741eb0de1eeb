//! # sapo-host
//!
//! Everything of sapo that touches the world: model files (Hugging Face
//! safetensors layout and GGUF), tokenizers and chat templates, datasets,
//! and the `sapo` command built on them. The maths lives in `sapo-core`.
//!
//! Where to look:
//!
//! * [`model_files`] — opening and saving models: the Hugging Face layout
//!   ([`model_files::hf`]), GGUF files ([`model_files::gguf`]), and
//!   [`model_files::load`], which picks one from the path;
//! * [`atomic_file`] — the crash-safe whole-file write (temporary file,
//!   fsync, rename) that models, configs and reports are saved with;
//! * [`tokenizer`], [`chat_template`] — text to token ids and back, and
//!   conversations to prompts, as transformers does;
//! * [`data`] — TRL dataset shapes, tokenised for training;
//! * [`train`] — `sapo train`, every method behind one trainer;
//!   [`compare`] — `sapo compare`, grids of runs; [`plot`] — training
//!   curves from `metrics.jsonl`;
//! * [`task`] — the shipped task, its generator and judge; [`verify`] —
//!   `sapo verify`, a candidate backend against the CPU reference.

pub mod atomic_file;
pub mod chat_template;
pub mod compare;
pub mod data;
pub mod model_files;
pub mod plot;
pub mod task;
pub mod tokenizer;
pub mod train;
pub mod verify;
