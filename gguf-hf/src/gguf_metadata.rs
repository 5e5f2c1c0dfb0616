//! GGUF metadata: typed key/value pairs, and a bounds-checked cursor to read them.
//!
//! A GGUF header is a flat run of little-endian fields with length-prefixed strings and
//! arrays. Every length in it is untrusted: a truncated or corrupt file could claim a string of
//! 2⁶⁴ bytes. So every read goes through `Cursor`, which checks the bytes exist before
//! touching them and turns "not enough bytes" into an error instead of a panic.

use std::collections::BTreeMap;

use super::gguf::GgufError;

/// One metadata value. GGUF has 13 value types; arrays may hold any of them, even arrays.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer type, if its value is non-negative and fits in a `u64`. Writers disagree on
    /// whether a count is `u32` or `u64`, so readers should not care.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Either float type (or an integer, which some writers use for `rope.freq_base`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The key → value table of a GGUF header, with typed getters whose errors name the key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(BTreeMap<String, MetaValue>);

impl Metadata {
    /// Adds `key`; returns false if it was already there.
    pub(crate) fn insert(&mut self, key: String, value: MetaValue) -> bool {
        self.0.insert(key, value).is_none()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// All keys and values, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &MetaValue)> {
        self.0.iter()
    }

    /// The value under `key`, or a [`GgufError::MissingKey`].
    pub fn get(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.0
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<T, GgufError> {
        let wrong = || GgufError::WrongType {
            key: key.to_string(),
            expected,
        };
        f(self.get(key)?).ok_or_else(wrong)
    }

    /// A non-negative integer of any width, as `usize`.
    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        self.typed(key, "a number", MetaValue::as_f64)
    }

    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    pub fn bool(&self, key: &str) -> Result<bool, GgufError> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    /// An array of strings, such as `tokenizer.ggml.tokens`.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(MetaValue::as_str).collect()
        })
    }

    /// An array of non-negative integers, such as `tokenizer.ggml.token_type`.
    pub fn u64_array(&self, key: &str) -> Result<Vec<u64>, GgufError> {
        self.typed(key, "an array of non-negative integers", |v| {
            v.as_array()?.iter().map(MetaValue::as_u64).collect()
        })
    }
}

/// `Ok(None)` for a missing key: optional keys default when absent, but still fail loudly when
/// present with the wrong type.
pub fn optional<T>(lookup: Result<T, GgufError>) -> Result<Option<T>, GgufError> {
    match lookup {
        Err(GgufError::MissingKey(_)) => Ok(None),
        other => other.map(Some),
    }
}

/// Arrays of arrays are legal, but each level costs only 12 bytes, so a hostile file could nest
/// millions deep and overflow our stack. Real files nest at most once.
const MAX_ARRAY_NESTING: usize = 8;

/// Reads little-endian fields from a byte slice, checking bounds on every read.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes; `what` names the field for the error message.
    pub fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n));
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += slice.len();
                Ok(slice)
            }
            None => Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: `u64` byte length, then UTF-8 bytes (no terminator).
    pub fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
        })
    }

    /// A value of GGUF value type `ty`; `key` names it in errors.
    pub fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(key)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(GgufError::BadValue {
                        key: key.into(),
                        why: format!("bool byte {b}"),
                    })
                }
            },
            8 => MetaValue::String(self.string(key)?),
            9 => self.array_value(key, depth)?,
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            _ => {
                return Err(GgufError::BadValue {
                    key: key.into(),
                    why: format!("value type {ty}"),
                })
            }
        })
    }

    /// An array: `u32` element type, `u64` count, then the elements.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        if depth >= MAX_ARRAY_NESTING {
            let why = format!("arrays nested deeper than {MAX_ARRAY_NESTING}");
            return Err(GgufError::BadValue {
                key: key.into(),
                why,
            });
        }
        let elem_ty = self.u32(key)?;
        let count = self.u64(key)?;
        // Every element takes at least one byte, so a count larger than what is left is a lie;
        // checking first also keeps `with_capacity` from trying to allocate it.
        let left = (self.bytes.len() - self.pos) as u64;
        if count > left {
            return Err(GgufError::Truncated {
                what: key.to_string(),
                offset: self.pos as u64,
            });
        }
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(self.value(elem_ty, key, depth + 1)?);
        }
        Ok(MetaValue::Array(items))
    }
}
