//! GGUF tensors → `model.safetensors`: names, shapes, the q/k un-permutation, and streaming.
//!
//! Three things differ between a llama.cpp tensor and its Hugging Face twin:
//!
//! 1. **Name**: `blk.3.attn_q.weight` is `model.layers.3.self_attn.q_proj.weight`.
//! 2. **Shape order**: GGUF lists dims innermost first, PyTorch outermost first. The bytes are
//!    laid out the same way (row-major), so only the list is reversed.
//! 3. **Row order of q and k**: HF Llama applies rotary embeddings to the two *halves* of each
//!    head (`rotate_half`); llama.cpp to *adjacent pairs*. Its converter therefore permutes the
//!    rows of `q_proj` and `k_proj` within each head, and we must permute them back (see
//!    [`unpermute_rows`]) or attention silently computes garbage.
//!
//! Writing is streamed: the safetensors header needs only shapes, and each tensor's data is
//! dequantized just as the writer reaches it, so memory stays at one tensor, not the model.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use safetensors::{Dtype, View};

use super::dequant::GgmlType;
use super::gguf::{GgufFile, TensorInfo};
use super::gguf_to_hf::{ConvertError, LlamaParams};

/// One tensor to write: where it comes from and what it becomes.
pub struct PlannedTensor<'a> {
    pub hf_name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    info: &'a TensorInfo,
    file: &'a GgufFile,
    /// `Some(n_heads)` for q and k, whose rows llama.cpp permuted per head.
    unpermute_heads: Option<usize>,
}

/// One GGUF tensor and the Hugging Face tensor it becomes.
struct Mapping {
    gguf: String,
    hf: String,
    /// PyTorch shape the metadata implies.
    shape: Vec<usize>,
    unpermute_heads: Option<usize>,
}

fn mapping(gguf: String, hf: String, shape: Vec<usize>, heads: Option<usize>) -> Mapping {
    Mapping {
        gguf,
        hf,
        shape,
        unpermute_heads: heads,
    }
}

/// Every tensor a Llama model with parameters `p` needs.
fn expected(p: &LlamaParams) -> Vec<Mapping> {
    let (h, ff, vocab) = (p.hidden_size, p.intermediate_size, p.vocab_size);
    let (q, kv) = (
        p.num_attention_heads * p.head_dim,
        p.num_key_value_heads * p.head_dim,
    );
    let (q_heads, kv_heads) = (Some(p.num_attention_heads), Some(p.num_key_value_heads));
    let mut list = vec![
        mapping(
            "token_embd.weight".into(),
            "model.embed_tokens.weight".into(),
            vec![vocab, h],
            None,
        ),
        mapping(
            "output_norm.weight".into(),
            "model.norm.weight".into(),
            vec![h],
            None,
        ),
    ];
    if !p.tie_word_embeddings {
        list.push(mapping(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![vocab, h],
            None,
        ));
    }
    for i in 0..p.num_hidden_layers {
        let layer = [
            ("attn_norm", "input_layernorm", vec![h], None),
            ("attn_q", "self_attn.q_proj", vec![q, h], q_heads),
            ("attn_k", "self_attn.k_proj", vec![kv, h], kv_heads),
            ("attn_v", "self_attn.v_proj", vec![kv, h], None),
            ("attn_output", "self_attn.o_proj", vec![h, q], None),
            ("ffn_norm", "post_attention_layernorm", vec![h], None),
            ("ffn_gate", "mlp.gate_proj", vec![ff, h], None),
            ("ffn_up", "mlp.up_proj", vec![ff, h], None),
            ("ffn_down", "mlp.down_proj", vec![h, ff], None),
        ];
        for (gguf, hf, shape, heads) in layer {
            let (gguf, hf) = (
                format!("blk.{i}.{gguf}.weight"),
                format!("model.layers.{i}.{hf}.weight"),
            );
            list.push(mapping(gguf, hf, shape, heads));
        }
    }
    list
}

/// Matches the file's tensors against what `p` implies: every expected tensor present with its
/// shape, and nothing left over (an unknown tensor — a bias, `rope_freqs` — would change the
/// model if dropped).
pub fn plan<'a>(
    file: &'a GgufFile,
    p: &LlamaParams,
) -> Result<Vec<PlannedTensor<'a>>, ConvertError> {
    let expected = expected(p);
    let known: HashSet<&str> = expected.iter().map(|m| m.gguf.as_str()).collect();
    if let Some(extra) = file
        .header
        .tensors
        .iter()
        .find(|t| !known.contains(t.name.as_str()))
    {
        return Err(ConvertError::UnexpectedTensor(extra.name.clone()));
    }
    if !p.head_dim.is_multiple_of(2) {
        let why = format!("odd head_dim {}", p.head_dim);
        return Err(ConvertError::UnsupportedFeature(why));
    }
    let plan_one = |m: Mapping| {
        let info = file
            .header
            .tensor(&m.gguf)
            .ok_or(ConvertError::MissingTensor(m.gguf))?;
        if info.shape() != m.shape {
            let (name, found) = (info.name.clone(), info.shape());
            return Err(ConvertError::BadShape {
                name,
                expected: m.shape,
                found,
            });
        }
        file.tensor_bytes(info)?; // checked here so that writing cannot fail on it later
        let unpermute_heads = m.unpermute_heads;
        Ok(PlannedTensor {
            hf_name: m.hf,
            shape: m.shape,
            info,
            file,
            unpermute_heads,
        })
    };
    expected.into_iter().map(plan_one).collect()
}

// ANCHOR: unpermute
/// Undoes llama.cpp's q/k row permutation. `w` is `[n_heads * head_dim, row_len]`, row-major.
///
/// Within each head, HF orders rows as two halves `[x_0 .. x_{d/2-1}, y_0 .. y_{d/2-1}]`, the
/// pairs that rotary embedding rotates together. llama.cpp interleaves them:
/// `[x_0, y_0, x_1, y_1, ...]`. So GGUF row `2i + t` of a head is HF row `t·d/2 + i`.
/// (transformers' GGUF loader: reshape to `[heads, d/2, 2, row]`, swap axes 1 and 2.)
pub fn unpermute_rows(w: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
    let head_dim = w.len() / row_len.max(1) / n_heads.max(1);
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for head in 0..n_heads {
        for t in 0..2 {
            for i in 0..half {
                let src = (head * head_dim + 2 * i + t) * row_len;
                let dst = (head * head_dim + t * half + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&w[src..src + row_len]);
            }
        }
    }
    out
}
// ANCHOR_END: unpermute

impl PlannedTensor<'_> {
    /// The tensor in f32 and HF row order.
    pub fn to_f32(&self) -> Result<Vec<f32>, ConvertError> {
        let values = self.file.dequantize(self.info)?;
        Ok(match self.unpermute_heads {
            Some(heads) => unpermute_rows(&values, heads, self.shape[1]),
            None => values,
        })
    }

    /// The tensor's own Q8_0/Q4_1 blocks in HF row order, for an engine that computes from
    /// the blocks (`None` for a plain F32/F16/BF16 tensor). A row of a 2-D quantized tensor is
    /// a whole number of blocks, so q/k's un-permutation moves whole rows of bytes and
    /// dequantizing the result gives exactly [`PlannedTensor::to_f32`].
    pub fn blocks(&self) -> Result<Option<(GgmlType, Vec<u8>)>, ConvertError> {
        let ty = self.info.ty;
        if ty.block_elements() == 1 || self.shape.len() != 2 {
            return Ok(None);
        }
        let bytes = self.file.tensor_bytes(self.info)?;
        let row_bytes = bytes.len() / self.shape[0].max(1);
        Ok(Some(match self.unpermute_heads {
            Some(heads) => (ty, unpermute_byte_rows(bytes, heads, row_bytes)),
            None => (ty, bytes.to_vec()),
        }))
    }
}

/// [`unpermute_rows`] on rows of `row_bytes` raw bytes (rows of quantized blocks).
fn unpermute_byte_rows(b: &[u8], n_heads: usize, row_bytes: usize) -> Vec<u8> {
    let head_dim = b.len() / row_bytes.max(1) / n_heads.max(1);
    let half = head_dim / 2;
    let mut out = vec![0u8; b.len()];
    for head in 0..n_heads {
        for t in 0..2 {
            for i in 0..half {
                let src = (head * head_dim + 2 * i + t) * row_bytes;
                let dst = (head * head_dim + t * half + i) * row_bytes;
                out[dst..dst + row_bytes].copy_from_slice(&b[src..src + row_bytes]);
            }
        }
    }
    out
}

/// A planned tensor as the safetensors writer sees it: shape now, bytes on demand.
struct LazyTensor<'a> {
    tensor: PlannedTensor<'a>,
    progress: ProgressBar,
    /// `View::data` cannot return an error, so a failure is parked here for the caller.
    error: &'a Cell<Option<ConvertError>>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }
    fn data_len(&self) -> usize {
        self.tensor.shape.iter().product::<usize>() * 4
    }
    /// Called by the writer once per tensor, in file order: dequantize now, drop after writing.
    fn data(&self) -> Cow<'_, [u8]> {
        self.progress.set_message(self.tensor.hf_name.clone());
        let mut bytes = Vec::with_capacity(self.data_len());
        match self.tensor.to_f32() {
            Ok(values) => values
                .iter()
                .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
            Err(e) => {
                // Keep the file layout consistent; the caller discards the file.
                bytes.resize(self.data_len(), 0);
                self.error.set(Some(e));
            }
        }
        self.progress.inc(1);
        Cow::Owned(bytes)
    }
}

/// Writes `plan` as an f32 `model.safetensors` at `path`, with a progress bar on stderr.
pub fn write_safetensors(plan: Vec<PlannedTensor>, path: &Path) -> Result<(), ConvertError> {
    let progress = ProgressBar::new(plan.len() as u64).with_prefix("converting");
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tensors {wide_msg}")
    {
        progress.set_style(style.progress_chars("=> "));
    }
    let error = Cell::new(None);
    let views = plan.into_iter().map(|tensor| {
        (
            tensor.hf_name.clone(),
            LazyTensor {
                tensor,
                progress: progress.clone(),
                error: &error,
            },
        )
    });
    serialize_for_pytorch(views, path)?;
    progress.finish_and_clear();
    error.take().map_or(Ok(()), Err)
}

/// Serializes `views` to `path` as a `model.safetensors` transformers accepts: it refuses a
/// file whose metadata does not say which framework wrote it (`"format": "pt"`).
pub fn serialize_for_pytorch<V: View>(
    views: impl IntoIterator<Item = (String, V)>,
    path: &Path,
) -> Result<(), safetensors::SafeTensorError> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute` (convert_hf_to_gguf.py): rows reshaped to `[heads, 2, d/2]`, axes
    /// 1 and 2 swapped. Our `unpermute_rows` must be its inverse.
    fn llama_cpp_permute(w: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
        let head_dim = w.len() / row_len / n_heads;
        let half = head_dim / 2;
        let mut out = vec![0f32; w.len()];
        for head in 0..n_heads {
            for t in 0..2 {
                for i in 0..half {
                    let hf = (head * head_dim + t * half + i) * row_len;
                    let gguf = (head * head_dim + 2 * i + t) * row_len;
                    out[gguf..gguf + row_len].copy_from_slice(&w[hf..hf + row_len]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_small_example() {
        // One head, head_dim 4, rows of length 1: GGUF [x0, y0, x1, y1] → HF [x0, x1, y0, y1].
        assert_eq!(unpermute_rows(&[0., 1., 2., 3.], 1, 1), [0., 2., 1., 3.]);
        // Two heads are permuted independently.
        let w: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(unpermute_rows(&w, 2, 1), [0., 2., 1., 3., 4., 6., 5., 7.]);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, head_dim, row_len) = (3, 8, 5);
        let hf: Vec<f32> = (0..heads * head_dim * row_len).map(|x| x as f32).collect();
        let gguf = llama_cpp_permute(&hf, heads, row_len);
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, heads, row_len), hf);
    }
}
