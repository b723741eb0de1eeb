//! Reading a dataset file into JSON records with their line numbers:
//! `.jsonl` is one object per line; `.json` is an array of objects, or JSON
//! Lines when it does not start with `[` (as Hugging Face `datasets` reads
//! either from a `.json` file).

use std::path::Path;

use crate::chat_template::OrderedJson;

use super::{DataError, Problem};

/// How a file's records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line; blank lines are ignored.
    JsonLines,
    /// A JSON array of objects (or JSON Lines if the text does not start with `[`).
    Json,
}

impl FileFormat {
    /// The format a path's extension names: `.jsonl` or `.json`.
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some("jsonl") => Ok(FileFormat::JsonLines),
            Some("json") => Ok(FileFormat::Json),
            _ => Err(DataError::UnsupportedFile { path: path.to_path_buf() }),
        }
    }
}

/// One record as read: where it is and what it holds (or why it is not JSON).
#[derive(Debug)]
pub(crate) struct RawRecord {
    /// 1-based line where the record starts.
    pub line: usize,
    /// 0-based position among the file's records.
    pub index: usize,
    pub value: Result<OrderedJson, Problem>,
}

/// Splits `bytes` into records. A JSON Lines line that is not JSON (or not
/// UTF-8) is a bad record, the rest still read; an array file that does not
/// parse is an error for the whole file, since its records cannot be told apart.
pub(crate) fn read_records(path: &Path, bytes: &[u8], format: FileFormat) -> Result<Vec<RawRecord>, DataError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let starts_with_bracket = bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[');
    if format == FileFormat::Json && starts_with_bracket { read_array(path, bytes) } else { Ok(read_lines(bytes)) }
}

fn read_lines(bytes: &[u8]) -> Vec<RawRecord> {
    let mut records = Vec::new();
    for (line_index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = match std::str::from_utf8(line) {
            Ok(text) => OrderedJson::parse(text).map_err(|error| Problem::NotJson { message: error.to_string() }),
            Err(error) => Err(Problem::NotJson { message: format!("invalid UTF-8: {error}") }),
        };
        records.push(RawRecord { line: line_index + 1, index: records.len(), value });
    }
    records
}

fn read_array(path: &Path, bytes: &[u8]) -> Result<Vec<RawRecord>, DataError> {
    let not_json = |message: String| DataError::NotJsonArray { path: path.to_path_buf(), message };
    let text = std::str::from_utf8(bytes).map_err(|error| not_json(format!("invalid UTF-8: {error}")))?;
    let values: Vec<OrderedJson> = serde_json::from_str(text).map_err(|error| not_json(error.to_string()))?;
    let offsets = element_offsets(text);
    let mut records = Vec::with_capacity(values.len());
    let mut line = 1;
    let mut scanned = 0;
    for (index, value) in values.into_iter().enumerate() {
        // The scanner finds one offset per element of a well-formed array.
        let offset = offsets.get(index).copied().unwrap_or(scanned).max(scanned);
        line += bytecount_newlines(&text.as_bytes()[scanned..offset]);
        scanned = offset;
        records.push(RawRecord { line, index, value: Ok(value) });
    }
    Ok(records)
}

fn bytecount_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&byte| byte == b'\n').count()
}

/// Byte offsets where each top-level element of a well-formed JSON array starts.
fn element_offsets(text: &str) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut expecting = false;
    for (offset, byte) in text.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte.is_ascii_whitespace() {
            continue;
        }
        if depth == 1 && expecting && byte != b']' {
            offsets.push(offset);
            expecting = false;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_get_the_line_they_start_on() {
        let text = "[\n  {\"a\": \"x,]\\\"\"},\n\n  {\"b\": [1, {\"c\": 2}]}, 3,\n  \"s\"\n]";
        let records = read_records(Path::new("d.json"), text.as_bytes(), FileFormat::Json).unwrap();
        let lines: Vec<usize> = records.iter().map(|record| record.line).collect();
        assert_eq!(lines, [2, 4, 4, 5]);
    }

    #[test]
    fn json_lines_skip_blank_lines_and_keep_bad_ones_as_problems() {
        let text = "{\"a\": 1}\n\n  \r\n{oops\n\u{feff}\n{\"b\": 2}\r\n";
        let records = read_records(Path::new("d.jsonl"), text.as_bytes(), FileFormat::JsonLines).unwrap();
        let lines: Vec<usize> = records.iter().map(|record| record.line).collect();
        assert_eq!(lines, [1, 4, 5, 6]);
        assert!(records[1].value.is_err());
        assert!(records[3].value.is_ok());
    }
}
