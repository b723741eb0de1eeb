//! Metadata values: the thirteen GGUF value types, arrays of arrays included.

use std::fmt;

use super::cursor::Cursor;
use super::error::GgufError;

/// Arrays nest at most this deep. GGUF sets no limit, but each level is a
/// recursive call: without one, a crafted file of nested array headers
/// would overflow the stack. Real files nest at most two deep.
const MAX_ARRAY_DEPTH: usize = 16;

/// A GGUF metadata value type, with its id in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    /// 0: `u8`.
    U8,
    /// 1: `i8`.
    I8,
    /// 2: `u16`.
    U16,
    /// 3: `i16`.
    I16,
    /// 4: `u32`.
    U32,
    /// 5: `i32`.
    I32,
    /// 6: `f32`.
    F32,
    /// 7: one byte, 0 or 1.
    Bool,
    /// 8: u64 byte length + UTF-8 bytes.
    String,
    /// 9: element type id (u32) + u64 count + elements.
    Array,
    /// 10: `u64`.
    U64,
    /// 11: `i64`.
    I64,
    /// 12: `f64`.
    F64,
}

impl GgufValueType {
    /// The type of id `id`, or `None` for an id GGUF does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The least number of bytes a value of this type takes in the file,
    /// used to reject counts that could not fit.
    fn min_bytes(self) -> u64 {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    /// The name gguf-py and llama.cpp use, e.g. `UINT32`.
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A metadata value as stored, its type kept exactly (a `u32` stays a `u32`).
///
/// ```
/// use sapo_host::model_files::gguf::GgufValue;
/// let value = GgufValue::U32(30);
/// assert_eq!(value.as_u64(), Some(30));
/// assert_eq!(value.as_str(), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    String(String),
    /// `ARRAY`.
    Array(GgufArray),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

/// An array value, stored as a vector of its element type.
///
/// Typed vectors rather than a `Vec<GgufValue>`: a vocabulary of 49 152
/// tokens is then a plain `Vec<String>`, and memory stays within a small
/// multiple of the file's size whatever the element type (a `GgufValue` per
/// byte of a `UINT8` array would take 32 times the file).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// Elements of type `UINT8`.
    U8(Vec<u8>),
    /// Elements of type `INT8`.
    I8(Vec<i8>),
    /// Elements of type `UINT16`.
    U16(Vec<u16>),
    /// Elements of type `INT16`.
    I16(Vec<i16>),
    /// Elements of type `UINT32`.
    U32(Vec<u32>),
    /// Elements of type `INT32`.
    I32(Vec<i32>),
    /// Elements of type `FLOAT32`.
    F32(Vec<f32>),
    /// Elements of type `BOOL`.
    Bool(Vec<bool>),
    /// Elements of type `STRING`.
    String(Vec<String>),
    /// Elements of type `ARRAY`, each with its own element type.
    Array(Vec<GgufArray>),
    /// Elements of type `UINT64`.
    U64(Vec<u64>),
    /// Elements of type `INT64`.
    I64(Vec<i64>),
    /// Elements of type `FLOAT64`.
    F64(Vec<f64>),
}

impl GgufArray {
    /// The element type (known even when the array is empty).
    pub fn element_type(&self) -> GgufValueType {
        match self {
            GgufArray::U8(_) => GgufValueType::U8,
            GgufArray::I8(_) => GgufValueType::I8,
            GgufArray::U16(_) => GgufValueType::U16,
            GgufArray::I16(_) => GgufValueType::I16,
            GgufArray::U32(_) => GgufValueType::U32,
            GgufArray::I32(_) => GgufValueType::I32,
            GgufArray::F32(_) => GgufValueType::F32,
            GgufArray::Bool(_) => GgufValueType::Bool,
            GgufArray::String(_) => GgufValueType::String,
            GgufArray::Array(_) => GgufValueType::Array,
            GgufArray::U64(_) => GgufValueType::U64,
            GgufArray::I64(_) => GgufValueType::I64,
            GgufArray::F64(_) => GgufValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(values) => values.len(),
            GgufArray::I8(values) => values.len(),
            GgufArray::U16(values) => values.len(),
            GgufArray::I16(values) => values.len(),
            GgufArray::U32(values) => values.len(),
            GgufArray::I32(values) => values.len(),
            GgufArray::F32(values) => values.len(),
            GgufArray::Bool(values) => values.len(),
            GgufArray::String(values) => values.len(),
            GgufArray::Array(values) => values.len(),
            GgufArray::U64(values) => values.len(),
            GgufArray::I64(values) => values.len(),
            GgufArray::F64(values) => values.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index`, as a scalar value (an inner array is cloned).
    pub fn get(&self, index: usize) -> Option<GgufValue> {
        Some(match self {
            GgufArray::U8(values) => GgufValue::U8(*values.get(index)?),
            GgufArray::I8(values) => GgufValue::I8(*values.get(index)?),
            GgufArray::U16(values) => GgufValue::U16(*values.get(index)?),
            GgufArray::I16(values) => GgufValue::I16(*values.get(index)?),
            GgufArray::U32(values) => GgufValue::U32(*values.get(index)?),
            GgufArray::I32(values) => GgufValue::I32(*values.get(index)?),
            GgufArray::F32(values) => GgufValue::F32(*values.get(index)?),
            GgufArray::Bool(values) => GgufValue::Bool(*values.get(index)?),
            GgufArray::String(values) => GgufValue::String(values.get(index)?.clone()),
            GgufArray::Array(values) => GgufValue::Array(values.get(index)?.clone()),
            GgufArray::U64(values) => GgufValue::U64(*values.get(index)?),
            GgufArray::I64(values) => GgufValue::I64(*values.get(index)?),
            GgufArray::F64(values) => GgufValue::F64(*values.get(index)?),
        })
    }
}

impl GgufValue {
    /// The value's type.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(_) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// Any integer that is non-negative, widened: writers differ in which
    /// integer type they use for a count (u32 in llama.cpp's converter, i32
    /// for a Python int in gguf-py's `add_array`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(value) => Some(value.into()),
            GgufValue::U16(value) => Some(value.into()),
            GgufValue::U32(value) => Some(value.into()),
            GgufValue::U64(value) => Some(value),
            GgufValue::I8(value) => u64::try_from(value).ok(),
            GgufValue::I16(value) => u64::try_from(value).ok(),
            GgufValue::I32(value) => u64::try_from(value).ok(),
            GgufValue::I64(value) => u64::try_from(value).ok(),
            _ => None,
        }
    }

    /// Any integer that fits an `i64`, widened.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(value) => Some(value.into()),
            GgufValue::U16(value) => Some(value.into()),
            GgufValue::U32(value) => Some(value.into()),
            GgufValue::U64(value) => i64::try_from(value).ok(),
            GgufValue::I8(value) => Some(value.into()),
            GgufValue::I16(value) => Some(value.into()),
            GgufValue::I32(value) => Some(value.into()),
            GgufValue::I64(value) => Some(value),
            _ => None,
        }
    }

    /// A `FLOAT32` or `FLOAT64`, as `f64` (exact for both).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(value) => Some(value.into()),
            GgufValue::F64(value) => Some(value),
            _ => None,
        }
    }

    /// A `BOOL`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(value) => Some(value),
            _ => None,
        }
    }

    /// A `STRING`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// An `ARRAY`.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(array) => Some(array),
            _ => None,
        }
    }

    /// A short description for error messages: the type and, for scalars
    /// and short strings, the value.
    pub(crate) fn describe(&self) -> String {
        match self {
            GgufValue::Array(array) => format!("an ARRAY of {} {}", array.len(), array.element_type()),
            GgufValue::String(text) if text.chars().count() > 40 => {
                format!("STRING {:?}…", text.chars().take(40).collect::<String>())
            }
            GgufValue::String(text) => format!("STRING {text:?}"),
            GgufValue::U8(v) => format!("UINT8 {v}"),
            GgufValue::I8(v) => format!("INT8 {v}"),
            GgufValue::U16(v) => format!("UINT16 {v}"),
            GgufValue::I16(v) => format!("INT16 {v}"),
            GgufValue::U32(v) => format!("UINT32 {v}"),
            GgufValue::I32(v) => format!("INT32 {v}"),
            GgufValue::F32(v) => format!("FLOAT32 {v}"),
            GgufValue::Bool(v) => format!("BOOL {v}"),
            GgufValue::U64(v) => format!("UINT64 {v}"),
            GgufValue::I64(v) => format!("INT64 {v}"),
            GgufValue::F64(v) => format!("FLOAT64 {v}"),
        }
    }
}

/// Reads a value type id.
pub(crate) fn read_value_type(cursor: &mut Cursor<'_>, what: &str) -> Result<GgufValueType, GgufError> {
    let offset = cursor.position();
    let id = cursor.u32(what)?;
    GgufValueType::from_id(id)
        .ok_or_else(|| cursor.corrupt(offset, format!("unknown {what} {id} (GGUF defines 0 to 12)")))
}

/// Reads one value of type `value_type`.
pub(crate) fn read_value(cursor: &mut Cursor<'_>, value_type: GgufValueType) -> Result<GgufValue, GgufError> {
    Ok(match value_type {
        GgufValueType::U8 => GgufValue::U8(cursor.u8("UINT8 value")?),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(cursor.array("INT8 value")?)),
        GgufValueType::U16 => GgufValue::U16(cursor.u16("UINT16 value")?),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(cursor.array("INT16 value")?)),
        GgufValueType::U32 => GgufValue::U32(cursor.u32("UINT32 value")?),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(cursor.array("INT32 value")?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(cursor.array("FLOAT32 value")?)),
        GgufValueType::U64 => GgufValue::U64(cursor.u64("UINT64 value")?),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(cursor.array("INT64 value")?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(cursor.array("FLOAT64 value")?)),
        GgufValueType::Bool => GgufValue::Bool(read_bool(cursor)?),
        GgufValueType::String => GgufValue::String(cursor.string("STRING value")?),
        GgufValueType::Array => GgufValue::Array(read_array(cursor, 0)?),
    })
}

fn read_bool(cursor: &mut Cursor<'_>) -> Result<bool, GgufError> {
    let offset = cursor.position();
    match cursor.u8("BOOL value")? {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(cursor.corrupt(offset, format!("BOOL value is {byte}, not 0 or 1"))),
    }
}

/// Reads an array (element type, count, elements); `depth` counts the
/// arrays around it.
fn read_array(cursor: &mut Cursor<'_>, depth: usize) -> Result<GgufArray, GgufError> {
    let offset = cursor.position();
    if depth >= MAX_ARRAY_DEPTH {
        return Err(cursor.corrupt(offset, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
    }
    let element_type = read_value_type(cursor, "array element type")?;
    // Accepted only if `count` elements of the smallest size fit in what is left.
    let count = cursor.count("array length", element_type.min_bytes())?;
    Ok(match element_type {
        GgufValueType::U8 => GgufArray::U8(cursor.take(count, "UINT8 array")?.to_vec()),
        GgufValueType::I8 => GgufArray::I8(numbers(cursor, count, "INT8 array", i8::from_le_bytes)?),
        GgufValueType::U16 => GgufArray::U16(numbers(cursor, count, "UINT16 array", u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(numbers(cursor, count, "INT16 array", i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(numbers(cursor, count, "UINT32 array", u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(numbers(cursor, count, "INT32 array", i32::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(numbers(cursor, count, "FLOAT32 array", f32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(numbers(cursor, count, "UINT64 array", u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(numbers(cursor, count, "INT64 array", i64::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(numbers(cursor, count, "FLOAT64 array", f64::from_le_bytes)?),
        GgufValueType::Bool => GgufArray::Bool((0..count).map(|_| read_bool(cursor)).collect::<Result<_, _>>()?),
        GgufValueType::String => {
            GgufArray::String((0..count).map(|_| cursor.string("STRING element")).collect::<Result<_, _>>()?)
        }
        GgufValueType::Array => {
            GgufArray::Array((0..count).map(|_| read_array(cursor, depth + 1)).collect::<Result<_, _>>()?)
        }
    })
}

/// `count` little-endian numbers of `N` bytes each.
fn numbers<const N: usize, T>(
    cursor: &mut Cursor<'_>,
    count: usize,
    what: &str,
    from_le_bytes: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    // `count` passed `Cursor::count` with N bytes an element, so count·N cannot overflow.
    let bytes = cursor.take(count * N, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            from_le_bytes(array)
        })
        .collect())
}
