//! What can go wrong reading a GGUF file, each case naming the file and,
//! for a malformed file, the byte offset where reading failed.

use std::path::PathBuf;

use super::ggml_type::GgmlType;

/// A GGUF file could not be read, parsed, dequantised or mapped to a model.
///
/// Every variant carries the file's path so that a message on its own says
/// which file is at fault; format errors also carry the byte offset.
///
/// ```
/// use sapo_host::model_files::gguf::GgufFile;
/// let error = GgufFile::from_bytes("tiny.gguf", b"GGUF\x03\x00".to_vec()).unwrap_err();
/// assert_eq!(error.to_string(), "tiny.gguf: truncated at byte 4: version needs 4 bytes, 2 left");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before a field it announces.
    #[error("{}: truncated at byte {offset}: {what} needs {needed} bytes, {available} left", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the field starts.
        offset: u64,
        /// The field, e.g. `tensor count` or `string length in metadata key 'general.name'`.
        what: String,
        /// Bytes the field needs (for a count, the least its elements could take).
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },
    /// A field holds a value no valid GGUF file has.
    #[error("{}: corrupt at byte {offset}: {what}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the field starts.
        offset: u64,
        /// What is wrong, with the offending value.
        what: String,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file: magic {found:02x?} at byte 0, expected \"GGUF\"", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version other than 2 or 3 (version 1 used 32-bit counts; a
    /// big-endian file reads as a huge version).
    #[error("{}: GGUF version {version} (at byte 4) is not supported; sapo reads versions 2 and 3 (little-endian)", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version field as read little-endian.
        version: u32,
    },
    /// A tensor's data is in a type sapo cannot dequantise.
    #[error(
        "{}: tensor '{tensor}' has type {ggml_type}, which sapo cannot dequantise (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K)",
        .path.display()
    )]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// Its type.
        ggml_type: GgmlType,
    },
    /// No tensor of that name.
    #[error("{}: no tensor named '{name}'", .path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The GGUF name asked for.
        name: String,
    },
    /// A metadata key the reader needs is absent.
    #[error("{}: metadata key '{key}' is missing", .path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata key holds a value of the wrong type or out of range.
    #[error("{}: metadata key '{key}' holds {found}, expected {expected}", .path.display())]
    MetadataType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the reader needs, e.g. `a non-negative integer`.
        expected: &'static str,
        /// What the file holds, e.g. `STRING "abc"`.
        found: String,
    },
    /// `general.architecture` names a model family sapo does not load.
    #[error("{}: architecture '{architecture}' is not supported (sapo loads 'llama')", .path.display())]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture the file declares.
        architecture: String,
    },
    /// The file uses a model feature sapo's LLaMA does not implement.
    #[error("{}: unsupported model feature: {feature}", .path.display())]
    UnsupportedFeature {
        /// The file.
        path: PathBuf,
        /// The feature and where the file declares it.
        feature: String,
    },
    /// A tensor's shape is not the one the configuration implies.
    #[error("{}: tensor '{tensor}' has shape {found:?} (Hugging Face order), expected {expected:?}", .path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// Its shape, outermost first.
        found: Vec<usize>,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },
    /// The file holds tensors the LLaMA mapping does not use; loading without
    /// them would silently change the model (e.g. `rope_freqs.weight`).
    #[error("{}: tensors not used by the LLaMA mapping: {}", .path.display(), .names.join(", "))]
    UnusedTensors {
        /// The file.
        path: PathBuf,
        /// Their GGUF names.
        names: Vec<String>,
    },
    /// The metadata describe an inconsistent model.
    #[error("{}: invalid model configuration: {reason}", .path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl GgufError {
    /// Adds where in the file's structure a truncation or corruption was met
    /// (`metadata key 'general.name'`), so the message names the field.
    pub(crate) fn within(mut self, context: impl FnOnce() -> String) -> Self {
        match &mut self {
            GgufError::Truncated { what, .. } => *what = format!("{what} in {}", context()),
            GgufError::Corrupt { what, .. } => *what = format!("{what}, in {}", context()),
            _ => {}
        }
        self
    }
}
