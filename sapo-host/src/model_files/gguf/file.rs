//! The GGUF container: header, metadata, tensor infos and the data section,
//! parsed once at open with every length checked against the file's size.
//!
//! Layout (little-endian; ggml's `docs/gguf.md`):
//!
//! ```text
//! "GGUF" | version: u32 | tensor_count: u64 | metadata_count: u64
//! metadata_count × (key: string, value_type: u32, value)
//! tensor_count × (name: string, n_dims: u32, dims: n_dims × u64 (innermost first), type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! data section: each tensor at its offset (a multiple of the alignment)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::cursor::Cursor;
use super::dequant::dequantize;
use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::value::{GgufValue, read_value, read_value_type};

/// The alignment of the data section and of each tensor in it when the file
/// sets no `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// One tensor's entry in the file: name, dims, type and where its data lies.
///
/// Only [`GgufFile`] makes these, after checking that the data lies inside
/// the file (for every type whose block size is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
    n_elements: u64,
    byte_len: Option<u64>,
}

impl TensorInfo {
    /// The GGUF name, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions as stored: innermost (contiguous) first, the reverse of a
    /// row-major shape. A Hugging Face `[out, in]` weight has dims `[in, out]`.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// The row-major shape (outermost first), as safetensors and PyTorch
    /// write it: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim fits: the product passed a check against the file's size
        // or the element count's u64 bound, and usize is 64 bits on every
        // target sapo-host builds for (it maps the file).
        self.dims.iter().rev().map(|&dim| dim as usize).collect()
    }

    /// The data's type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Offset of the data from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements (1 for a tensor with no dims, as in ggml).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Bytes of data; `None` when the type is unknown to this reader.
    pub fn byte_len(&self) -> Option<u64> {
        self.byte_len
    }
}

/// Where the file's bytes live.
#[derive(Debug)]
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// An open GGUF file (version 2 or 3): its metadata and tensor infos parsed,
/// its tensor data memory-mapped and dequantised on request.
///
/// ```
/// use sapo_host::model_files::gguf::{GgmlType, GgufFile};
/// let file = GgufFile::open("../fixtures/gguf/tiny_llama.gguf.bin")?;
/// assert_eq!(file.metadata_str("general.architecture")?, Some("llama"));
/// let q_proj = file.tensor("blk.0.attn_q.weight").expect("present");
/// assert_eq!((q_proj.dims(), q_proj.ggml_type()), (&[32, 16][..], GgmlType::Q8_0));
/// assert_eq!(file.tensor_f32("blk.0.attn_q.weight")?.len(), 16 * 32);
/// # Ok::<(), sapo_host::model_files::gguf::GgufError>(())
/// ```
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps the file at `path` and parses its header, metadata and tensor
    /// infos. Tensor data is read only when asked for.
    ///
    /// # Errors
    /// [`GgufError::Io`] if the file cannot be opened or mapped; a format
    /// error naming the byte offset if it is not a valid GGUF v2/v3 file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io_error = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let length = file.metadata().map_err(io_error)?.len();
        let storage = if length == 0 {
            // Some platforms refuse to map an empty file; it is a truncated GGUF either way.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and sapo never writes the file; like
            // every mmap-based loader (safetensors, llama.cpp) it assumes no
            // other process truncates or rewrites a model file while it is open.
            Storage::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io_error)?)
        };
        Self::parse(path.to_path_buf(), storage)
    }

    /// Parses a GGUF file held in memory; `path` only names it in errors.
    ///
    /// # Errors
    /// A format error naming the byte offset if `bytes` is not a valid GGUF
    /// v2/v3 file.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Self, GgufError> {
        let bytes = storage.bytes();
        let mut cursor = Cursor::new(bytes, &path);
        let magic: [u8; 4] = cursor.array("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { path, found: magic });
        }
        let version = cursor.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { path, version });
        }
        // Least bytes per entry: a tensor info is name length (8), n_dims (4),
        // type (4), offset (8); a metadata entry is key length (8), type (4), value (≥ 1).
        let tensor_count = cursor.count("tensor count", 24)?;
        let metadata_count = cursor.count("metadata count", 13)?;
        let (metadata, metadata_index) = read_metadata(&mut cursor, metadata_count)?;
        let alignment = alignment(&path, &metadata, &metadata_index)?;
        let (tensors, tensor_index) = read_tensor_infos(&mut cursor, tensor_count, alignment)?;
        let data_offset = (cursor.position() as u64).next_multiple_of(alignment);
        check_data_in_bounds(&cursor, &tensors, data_offset)?;
        Ok(GgufFile { path, storage, version, metadata, metadata_index, tensors, tensor_index, alignment, data_offset })
    }

    /// The path the file was opened from (or the name given to
    /// [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version: 2 or 3 (the same layout for little-endian files).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section's alignment: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The value of metadata key `key`, e.g. `llama.block_count`.
    pub fn metadata(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&index| &self.metadata[index].1)
    }

    /// Every metadata key and value, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// Every tensor's info, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&index| &self.tensors[index])
    }

    /// The raw bytes of tensor `name`, in its stored type.
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`]; [`GgufError::UnsupportedTensorType`] for
    /// a type whose size this reader does not know.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.tensor(name).ok_or_else(|| self.missing_tensor(name))?;
        let byte_len = info.byte_len.ok_or_else(|| self.unsupported(info))?;
        // check_data_in_bounds verified this range lies inside the file at open.
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.storage.bytes()[start..start + byte_len as usize])
    }

    /// Tensor `name` dequantised to f32, row-major in its stored layout
    /// (shape [`TensorInfo::shape`]); no model-specific reordering.
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`]; [`GgufError::UnsupportedTensorType`]
    /// unless the type is F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K or Q6_K.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| self.missing_tensor(name))?;
        if !info.ggml_type.is_supported() {
            return Err(self.unsupported(info));
        }
        let bytes = self.tensor_bytes(name)?;
        // The supported types hold at most 1.8 elements per byte (Q4_0: 32 in 18), and the
        // bytes are in the file, so this allocation is at most 7.2 times the tensor's data.
        let mut values = vec![0f32; info.n_elements as usize];
        if !dequantize(info.ggml_type, bytes, &mut values) {
            return Err(self.unsupported(info));
        }
        Ok(values)
    }

    fn missing_tensor(&self, name: &str) -> GgufError {
        GgufError::MissingTensor { path: self.path.clone(), name: name.to_string() }
    }

    fn unsupported(&self, info: &TensorInfo) -> GgufError {
        GgufError::UnsupportedTensorType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type,
        }
    }
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

fn read_metadata(cursor: &mut Cursor<'_>, count: usize) -> Result<Metadata, GgufError> {
    let mut entries = Vec::with_capacity(count);
    let mut index = HashMap::with_capacity(count);
    for entry in 0..count {
        let key_offset = cursor.position();
        let key = cursor.string("key").map_err(|error| error.within(|| format!("metadata entry #{entry}")))?;
        let value = read_value_type(cursor, "value type")
            .and_then(|value_type| read_value(cursor, value_type))
            .map_err(|error| error.within(|| format!("metadata key '{key}'")))?;
        if index.insert(key.clone(), entries.len()).is_some() {
            return Err(cursor.corrupt(key_offset, format!("metadata key '{key}' appears twice")));
        }
        entries.push((key, value));
    }
    Ok((entries, index))
}

/// `general.alignment`: a power of two (ggml requires it), 32 by default.
fn alignment(path: &Path, entries: &[(String, GgufValue)], index: &HashMap<String, usize>) -> Result<u64, GgufError> {
    const KEY: &str = "general.alignment";
    let Some(&entry) = index.get(KEY) else { return Ok(DEFAULT_ALIGNMENT) };
    let value = &entries[entry].1;
    match value.as_u64() {
        Some(alignment) if alignment.is_power_of_two() && alignment <= u32::MAX as u64 => Ok(alignment),
        _ => Err(GgufError::MetadataType {
            path: path.to_path_buf(),
            key: KEY.to_string(),
            expected: "a power of two below 2³²",
            found: value.describe(),
        }),
    }
}

type TensorInfos = (Vec<TensorInfo>, HashMap<String, usize>);

fn read_tensor_infos(cursor: &mut Cursor<'_>, count: usize, alignment: u64) -> Result<TensorInfos, GgufError> {
    let mut tensors = Vec::with_capacity(count);
    let mut index = HashMap::with_capacity(count);
    for entry in 0..count {
        let name_offset = cursor.position();
        let name = cursor.string("name").map_err(|error| error.within(|| format!("tensor info #{entry}")))?;
        if index.insert(name.clone(), tensors.len()).is_some() {
            return Err(cursor.corrupt(name_offset, format!("tensor name '{name}' appears twice")));
        }
        let info = read_tensor_info(cursor, name.clone(), alignment)
            .map_err(|error| error.within(|| format!("tensor '{name}'")))?;
        tensors.push(info);
    }
    Ok((tensors, index))
}

fn read_tensor_info(cursor: &mut Cursor<'_>, name: String, alignment: u64) -> Result<TensorInfo, GgufError> {
    let dims_offset = cursor.position();
    let n_dims = cursor.u32("dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(cursor.corrupt(dims_offset, format!("{n_dims} dimensions (ggml allows at most {MAX_DIMS})")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut n_elements: u64 = 1;
    for _ in 0..n_dims {
        let dim_offset = cursor.position();
        let dim = cursor.u64("dimension")?;
        // ggml stores dims as int64: anything above i64::MAX is negative there.
        n_elements = n_elements
            .checked_mul(dim)
            .filter(|&product| product <= i64::MAX as u64)
            .ok_or_else(|| cursor.corrupt(dim_offset, format!("dimension {dim} makes the element count overflow")))?;
        dims.push(dim);
    }
    let type_offset = cursor.position();
    let ggml_type = GgmlType::from_id(cursor.u32("type")?);
    let offset_offset = cursor.position();
    let offset = cursor.u64("data offset")?;
    if offset % alignment != 0 {
        return Err(cursor.corrupt(offset_offset, format!("data offset {offset} is not a multiple of {alignment}")));
    }
    let byte_len = match ggml_type.block_layout() {
        None => None,
        Some((block_elements, block_bytes)) => {
            let row = dims.first().copied().unwrap_or(1);
            if row % block_elements != 0 {
                return Err(cursor.corrupt(
                    type_offset,
                    format!("{ggml_type} rows of {row} elements are not whole blocks of {block_elements}"),
                ));
            }
            let byte_len = (n_elements / block_elements).checked_mul(block_bytes).ok_or_else(|| {
                cursor.corrupt(dims_offset, format!("{n_elements} elements of {ggml_type} overflow a 64-bit size"))
            })?;
            Some(byte_len)
        }
    };
    Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, byte_len })
}

/// Every tensor of known size lies inside the file, so that reading it later
/// can neither fail nor read out of bounds.
fn check_data_in_bounds(cursor: &Cursor<'_>, tensors: &[TensorInfo], data_offset: u64) -> Result<(), GgufError> {
    let file_len = (cursor.position() + cursor.remaining()) as u64;
    for info in tensors {
        let Some(byte_len) = info.byte_len else { continue };
        let Some(start) = data_offset.checked_add(info.offset).filter(|&start| start <= file_len) else {
            return Err(GgufError::Truncated {
                path: cursor.path().to_path_buf(),
                offset: data_offset.saturating_add(info.offset),
                what: format!("data of tensor '{}' (offset {} in the data section)", info.name, info.offset),
                needed: byte_len,
                available: 0,
            });
        };
        if byte_len > file_len - start {
            return Err(GgufError::Truncated {
                path: cursor.path().to_path_buf(),
                offset: start,
                what: format!("data of tensor '{}'", info.name),
                needed: byte_len,
                available: file_len - start,
            });
        }
    }
    Ok(())
}

/// Typed metadata look-ups: absent keys are `Ok(None)`, keys of the wrong
/// type an error naming what the file holds.
impl GgufFile {
    /// A non-negative integer of any width at `key`.
    ///
    /// # Errors
    /// [`GgufError::MetadataType`] if the key holds anything else.
    pub fn metadata_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "a non-negative integer", GgufValue::as_u64)
    }

    /// A `FLOAT32` or `FLOAT64` at `key`.
    ///
    /// # Errors
    /// [`GgufError::MetadataType`] if the key holds anything else.
    pub fn metadata_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.typed(key, "a float", GgufValue::as_f64)
    }

    /// A `BOOL` at `key`.
    ///
    /// # Errors
    /// [`GgufError::MetadataType`] if the key holds anything else.
    pub fn metadata_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a BOOL", GgufValue::as_bool)
    }

    /// A `STRING` at `key`.
    ///
    /// # Errors
    /// [`GgufError::MetadataType`] if the key holds anything else.
    pub fn metadata_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a STRING", GgufValue::as_str)
    }

    /// `Ok(value)` if present, [`GgufError::MissingMetadata`] if not.
    ///
    /// # Errors
    /// [`GgufError::MissingMetadata`].
    pub fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, GgufError> {
        value.ok_or_else(|| GgufError::MissingMetadata { path: self.path.clone(), key: key.to_string() })
    }

    /// A [`GgufError::MetadataType`] for `key`, which holds something other
    /// than `expected`.
    pub(crate) fn wrong_type(&self, key: &str, expected: &'static str) -> GgufError {
        GgufError::MetadataType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: self.metadata(key).map_or_else(|| "nothing".to_string(), GgufValue::describe),
        }
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        extract: impl FnOnce(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(value) => extract(value).map(Some).ok_or_else(|| self.wrong_type(key, expected)),
        }
    }
}
