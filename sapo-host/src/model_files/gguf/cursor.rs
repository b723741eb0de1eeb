//! A little-endian reader over the file's bytes that checks every length
//! against what is left before it reads or allocates anything.

use std::path::Path;

use super::error::GgufError;

/// A position in the file's bytes; every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Cursor { bytes, position: 0, path }
    }

    /// The file, for errors.
    pub(crate) fn path(&self) -> &'a Path {
        self.path
    }

    /// Bytes read so far, i.e. the offset of the next field.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Bytes left after the position.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// A `Truncated` error for a field of `needed` bytes at `offset`.
    pub(crate) fn truncated(&self, offset: usize, what: &str, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            offset: offset as u64,
            what: what.to_string(),
            needed,
            available: (self.bytes.len() - offset.min(self.bytes.len())) as u64,
        }
    }

    /// A `Corrupt` error at `offset`.
    pub(crate) fn corrupt(&self, offset: usize, what: String) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), offset: offset as u64, what }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(self.position, what, n as u64));
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let slice = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of elements that each take at least `min_element_bytes`
    /// bytes, refused when that many could not fit in what is left. This is
    /// what keeps a corrupt count from becoming a huge allocation: a `Vec`
    /// sized by an accepted count is at most a small multiple of the file.
    pub(crate) fn count(&mut self, what: &str, min_element_bytes: u64) -> Result<usize, GgufError> {
        self.checked_count(what, "", min_element_bytes)
    }

    /// [`Cursor::count`], naming the field `{what}{suffix}` in an error
    /// (formatted only then: strings are read by the tens of thousands).
    fn checked_count(&mut self, what: &str, suffix: &str, min_element_bytes: u64) -> Result<usize, GgufError> {
        let offset = self.position;
        let count = self.u64(what)?;
        let needed = count.saturating_mul(min_element_bytes);
        if needed > self.remaining() as u64 {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                offset: offset as u64,
                what: format!("{what}{suffix} {count}"),
                needed,
                available: self.remaining() as u64,
            });
        }
        // needed <= remaining <= usize::MAX and min_element_bytes >= 1, so count fits.
        Ok(count as usize)
    }

    /// A GGUF string: a u64 byte length, then UTF-8 bytes (no terminator).
    pub(crate) fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let offset = self.position;
        let length = self.checked_count(what, " length", 1)?;
        let bytes = self.take(length, what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(error) => Err(self.corrupt(offset, format!("{what} is not UTF-8 ({error})"))),
        }
    }
}
