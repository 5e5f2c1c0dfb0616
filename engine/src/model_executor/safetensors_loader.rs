//! Loads weights from Hugging Face safetensors files: one `model.safetensors`, or shards listed
//! in `model.safetensors.index.json`. Files are memory-mapped, so only the tensors we read are
//! paged in; f16 and bf16 are widened to f32.
//!
//! Every way a file can be wrong (truncated, garbled header, missing tensor, wrong shape,
//! unsupported dtype) becomes an error naming the file and tensor.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::weights::{assemble, assemble_into, HostTensor, LlamaWeights};
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};

fn bad(msg: String) -> EngineError {
    EngineError::Weights(msg)
}

/// The safetensors files of a model directory, in shard order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| bad(format!("cannot read {}: {e}", index.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: invalid JSON: {e}", index.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(format!("{}: no `weight_map` object", index.display())))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(bad(format!(
        "no model.safetensors or model.safetensors.index.json in {}",
        dir.display()
    )))
}

/// Reads all weights `config` calls for from the safetensors files in `dir`.
pub fn load_weights(dir: &Path, config: &ModelConfig) -> Result<LlamaWeights<HostTensor>> {
    load_weights_into(dir, config, Ok)
}

/// Checks that `dir` holds every tensor `config` calls for, with the right shape, a supported
/// dtype and all its bytes, reading only the files' headers: bad files fail when the model is
/// loaded, before any device is set up, and the weights are read later, tensor by tensor.
pub fn check_weights(dir: &Path, config: &ModelConfig) -> Result<()> {
    with_tensors(dir, |get| {
        let checked: Result<_> = assemble(config, |name, shape| {
            let (file, view) = get(name)?;
            check_tensor(name, file, &view, shape)?;
            Ok(HostTensor {
                data: Vec::new(),
                rows: 0,
                cols: 0,
            })
        });
        checked.map(drop)
    })
}

/// Reads the weights tensor by tensor, handing each fused tensor to `up` as soon as it is
/// built (see [`assemble_into`]): with `up` a backend's upload, at most one fused tensor is in
/// host memory at a time.
pub fn load_weights_into<T>(
    dir: &Path,
    config: &ModelConfig,
    up: impl FnMut(HostTensor) -> Result<T>,
) -> Result<LlamaWeights<T>> {
    with_tensors(dir, |get| {
        assemble_into(
            config,
            |name, shape| {
                let (file, view) = get(name)?;
                read_tensor(name, file, view, shape)
            },
            up,
        )
    })
}

/// Runs `f` with a reader of the tensors of `dir` by Hugging Face name (`read(name, shape)`),
/// each checked against `shape` and widened to f32: for loaders that choose what to read, such
/// as a tensor-parallel rank's ([`super::tensor_parallel::load_shard_into`]).
pub fn with_tensor_reader<R>(
    dir: &Path,
    f: impl FnOnce(&mut dyn FnMut(&str, [usize; 2]) -> Result<HostTensor>) -> Result<R>,
) -> Result<R> {
    with_tensors(dir, |get| {
        f(&mut |name, shape| {
            let (file, view) = get(name)?;
            read_tensor(name, file, view, shape)
        })
    })
}

/// A tensor's file and view, by name.
type GetTensor<'a> = dyn Fn(&str) -> Result<(&'a Path, safetensors::tensor::TensorView<'a>)> + 'a;

/// Maps and parses the files of `dir`, then runs `f` with a lookup by tensor name.
fn with_tensors<R>(dir: &Path, f: impl FnOnce(&GetTensor<'_>) -> Result<R>) -> Result<R> {
    let files = weight_files(dir)?;
    let mut maps = Vec::with_capacity(files.len());
    for path in &files {
        let file =
            File::open(path).map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: FFI boundary (mmap). The map is read-only and lives until loading ends;
        // like every mmap it assumes no other process truncates the file meanwhile.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| bad(format!("cannot map {}: {e}", path.display())))?;
        maps.push(map);
    }
    let mut parsed = Vec::with_capacity(files.len());
    for (path, map) in files.iter().zip(&maps) {
        let st = SafeTensors::deserialize(map).map_err(|e| {
            bad(format!(
                "{} is not a valid safetensors file ({e}); re-download it",
                path.display()
            ))
        })?;
        parsed.push(st);
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, st) in parsed.iter().enumerate() {
        for name in st.names() {
            owner.insert(name.to_string(), i);
        }
    }
    let get = |name: &str| {
        let i = *owner
            .get(name)
            .ok_or_else(|| bad(format!("tensor `{name}` is missing from {}", dir.display())))?;
        let view = parsed[i]
            .tensor(name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        Ok((files[i].as_path(), view))
    };
    f(&get)
}

/// Shape, dtype and length of one tensor, without reading its values.
fn check_tensor(
    name: &str,
    file: &Path,
    view: &safetensors::tensor::TensorView<'_>,
    [rows, cols]: [usize; 2],
) -> Result<()> {
    let got = view.shape();
    if !(got == [rows, cols] || (rows == 1 && got == [cols])) {
        return Err(bad(format!(
            "tensor `{name}` in {} has shape {got:?}, expected [{rows}, {cols}] from config.json",
            file.display()
        )));
    }
    let size = match view.dtype() {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(bad(format!(
                "tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 are supported"
            )))
        }
    };
    if view.data().len() != rows * cols * size {
        return Err(bad(format!(
            "tensor `{name}` holds {} values, expected {}",
            view.data().len() / size,
            rows * cols
        )));
    }
    Ok(())
}

fn read_tensor(
    name: &str,
    file: &Path,
    view: safetensors::tensor::TensorView<'_>,
    [rows, cols]: [usize; 2],
) -> Result<HostTensor> {
    let got = view.shape();
    let shape_ok = got == [rows, cols] || (rows == 1 && got == [cols]);
    if !shape_ok {
        return Err(bad(format!(
            "tensor `{name}` in {} has shape {got:?}, expected [{rows}, {cols}] from config.json",
            file.display()
        )));
    }
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 are supported"
            )))
        }
    };
    if data.len() != rows * cols {
        return Err(bad(format!(
            "tensor `{name}` holds {} values, expected {}",
            data.len(),
            rows * cols
        )));
    }
    Ok(HostTensor { data, rows, cols })
}
