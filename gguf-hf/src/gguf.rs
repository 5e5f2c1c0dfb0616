//! A reader for GGUF, llama.cpp's single-file model format (versions 2 and 3).
//!
//! Layout of a GGUF file, all little-endian:
//!
//! ```text
//! "GGUF" u32:version u64:tensor_count u64:kv_count
//! kv_count × (string:key u32:value_type value)          -- metadata (gguf_metadata.rs)
//! tensor_count × (string:name u32:n_dims u64×n_dims:dims u32:ggml_type u64:offset)
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor starts at data_offset + its offset
//! ```
//!
//! We memory-map the file instead of reading it: the header is small, and tensor bytes are then
//! paged in only when a tensor is dequantized, so a 100 MB model costs no 100 MB copy. All
//! offsets and sizes are checked while the header is parsed, so later code can slice the
//! mapping without fear; malformed input yields a [`GgufError`], never a panic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::dequant::{self, GgmlType};
use super::gguf_metadata::{Cursor, Metadata};

/// What can be wrong with a GGUF file, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file: it starts with {found:?} instead of \"GGUF\"; check the path")]
    BadMagic { found: Vec<u8> },
    #[error("this is a big-endian GGUF; only little-endian files are supported")]
    BigEndian,
    #[error(
        "GGUF version {0} is not supported (only 2 and 3); re-convert with a recent llama.cpp"
    )]
    UnsupportedVersion(u32),
    #[error("the file ends inside {what} (byte {offset}): it is truncated; download it again")]
    Truncated { what: String, offset: u64 },
    #[error("{what} is not valid UTF-8: the file is corrupt")]
    InvalidUtf8 { what: String },
    #[error("metadata key `{key}` has a bad value ({why}): the file is corrupt")]
    BadValue { key: String, why: String },
    #[error("metadata key `{0}` appears twice: the file is corrupt")]
    DuplicateKey(String),
    #[error("general.alignment = {0} must be a power of two: the file is corrupt")]
    BadAlignment(u64),
    #[error("tensor `{name}`: {why}: the file is corrupt or truncated")]
    BadTensor { name: String, why: String },
    #[error(
        "tensor `{name}` has ggml type {type_name} (id {id}); this reader supports F32, F16, BF16, \
         Q8_0 and Q4_1 — use a GGUF quantized to one of those"
    )]
    UnsupportedTensorType {
        name: String,
        id: u32,
        type_name: &'static str,
    },
    #[error("metadata key `{0}` is missing; is this a GGUF of a supported model?")]
    MissingKey(String),
    #[error("metadata key `{key}` is not {expected}")]
    WrongType { key: String, expected: &'static str },
}

/// Where one tensor lives and what it holds, as stored in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: innermost (fastest-varying) dimension first — the reverse of PyTorch's shape.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The PyTorch shape: `dims` reversed, outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Everything before the tensor data: version, metadata, tensor table, data offset.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
}

/// `general.alignment` when a file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

impl GgufHeader {
    /// Parses and validates the header of the GGUF file whose full contents are `file`.
    pub fn parse(file: &[u8]) -> Result<Self, GgufError> {
        let mut c = Cursor::new(file);
        let magic = c.take(4, "the magic number")?;
        if magic != b"GGUF" {
            return Err(GgufError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let version = c.u32("the version")?;
        match version {
            2 | 3 => {}
            v if matches!(v.swap_bytes(), 2 | 3) => return Err(GgufError::BigEndian),
            v => return Err(GgufError::UnsupportedVersion(v)),
        }
        let tensor_count = c.u64("the tensor count")?;
        let kv_count = c.u64("the metadata count")?;

        let mut metadata = Metadata::default();
        for _ in 0..kv_count {
            let key = c.string("a metadata key")?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if !metadata.insert(key.clone(), value) {
                return Err(GgufError::DuplicateKey(key));
            }
        }
        let alignment = match metadata.contains("general.alignment") {
            false => DEFAULT_ALIGNMENT,
            true => match metadata.usize("general.alignment")? as u64 {
                a if a.is_power_of_two() => a,
                a => return Err(GgufError::BadAlignment(a)),
            },
        };

        let mut tensors: Vec<TensorInfo> = Vec::new();
        let mut names = HashSet::new();
        for _ in 0..tensor_count {
            let info = read_tensor_info(&mut c)?;
            if !names.insert(info.name.clone()) {
                return Err(bad_tensor(&info.name, "the name appears twice"));
            }
            tensors.push(info);
        }
        let data_offset = (c.position() as u64).next_multiple_of(alignment);
        let header = Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        };
        for t in &header.tensors {
            header.check_tensor_fits(t, file.len() as u64)?;
        }
        Ok(header)
    }

    /// Checks that `t` is aligned and that its bytes lie inside a file of `file_len` bytes.
    fn check_tensor_fits(&self, t: &TensorInfo, file_len: u64) -> Result<(), GgufError> {
        if !t.offset.is_multiple_of(self.alignment) {
            return Err(bad_tensor(
                &t.name,
                &format!("offset {} is not {}-aligned", t.offset, self.alignment),
            ));
        }
        let fits = matches!(self.byte_range(t), Some((_, end)) if end <= file_len);
        if !fits {
            let why = format!(
                "its data ({} × {:?} at offset {}) runs past the end of the file ({file_len} B)",
                t.n_elements(),
                t.ty,
                t.offset
            );
            return Err(bad_tensor(&t.name, &why));
        }
        Ok(())
    }

    /// Absolute `(start, end)` of a tensor's bytes, or `None` on overflow.
    fn byte_range(&self, t: &TensorInfo) -> Option<(u64, u64)> {
        let start = self.data_offset.checked_add(t.offset)?;
        Some((start, start.checked_add(t.ty.bytes_for(t.n_elements())?)?))
    }

    /// The tensor named `name`, if the file has one.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

fn bad_tensor(name: &str, why: &str) -> GgufError {
    GgufError::BadTensor {
        name: name.to_string(),
        why: why.to_string(),
    }
}

/// One entry of the tensor table: name, dims, ggml type, offset.
fn read_tensor_info(c: &mut Cursor) -> Result<TensorInfo, GgufError> {
    let name = c.string("a tensor name")?;
    let n_dims = c.u32(&name)?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(bad_tensor(
            &name,
            &format!("{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"),
        ));
    }
    let dims = (0..n_dims)
        .map(|_| c.u64(&name))
        .collect::<Result<Vec<_>, _>>()?;
    let id = c.u32(&name)?;
    let offset = c.u64(&name)?;
    let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnsupportedTensorType {
        name: name.clone(),
        id,
        type_name: GgmlType::name_of_id(id),
    })?;
    let n = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if n.and_then(|n| usize::try_from(n).ok()).is_none() {
        return Err(bad_tensor(&name, &format!("dims {dims:?} overflow")));
    }
    // A quantized row must be whole blocks: blocks never straddle two rows.
    if !dims[0].is_multiple_of(ty.block_elements() as u64) {
        let why = format!(
            "row length {} is not a multiple of the {ty:?} block size {}",
            dims[0],
            ty.block_elements()
        );
        return Err(bad_tensor(&name, &why));
    }
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
    })
}

/// A memory-mapped GGUF file with its parsed header.
pub struct GgufFile {
    map: memmap2::Mmap,
    pub header: GgufHeader,
}

impl GgufFile {
    /// Maps `path` and parses its header.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and we only ever read it through `&[u8]`. Rust
        // cannot stop *another process* from changing or truncating the file meanwhile (bytes
        // would change under us, or a read would fault with SIGBUS); we accept that, as every
        // mmap-based model loader does, in exchange for not copying the weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&map)?;
        Ok(Self { map, header })
    }

    /// The raw bytes of tensor `t` (which must come from this file's header).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8], GgufError> {
        let range = self
            .header
            .byte_range(t)
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range
            .and_then(|r| self.map.get(r))
            .ok_or_else(|| bad_tensor(&t.name, "its data is outside the file"))
    }

    /// Tensor `t` converted to `f32`, in PyTorch row-major order of [`TensorInfo::shape`].
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let bytes = self.tensor_bytes(t)?;
        let mut out = vec![0f32; t.n_elements() as usize];
        dequant::dequantize(t.ty, bytes, &mut out);
        Ok(out)
    }
}
